"""Local files that hold what planning reads once and then needs again, so the driver's memory does not.

`RowSpool`: rows written once as an Arrow file, read back a batch at a time or by position (through plain
reads, not a memory map, so what was read leaves the process with the batch). `ArraySpool`: a numpy array
appended to in batches and read back whole once, instead of a list of parts and their concatenation, which
would hold the array twice.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa


class RowSpool:
    def __init__(self, path: str, schema: pa.Schema):
        self.path, self.schema = path, schema
        self._sink = pa.OSFile(path, "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)
        self.starts = [0]            # the first row of each batch, then the row count

    def write(self, table: pa.Table) -> None:
        for batch in table.combine_chunks().to_batches():
            self._writer.write_batch(batch)
            self.starts.append(self.starts[-1] + batch.num_rows)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()

    @property
    def num_rows(self) -> int:
        return self.starts[-1]

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        with pa.OSFile(self.path) as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                yield batch.select(columns) if columns else batch

    def read(self) -> pa.Table:
        """Every row (for a spool known to be small)."""
        return pa.Table.from_batches(list(self.batches()), self.schema)

    def take(self, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """The rows at these positions, in this order; each batch that holds some is read once."""
        rows = np.asarray(rows, np.int64)
        schema = pa.schema([self.schema.field(c) for c in columns]) if columns else self.schema
        if not len(rows):
            return schema.empty_table()
        batch_of = np.searchsorted(np.asarray(self.starts), rows, side="right") - 1
        order = np.argsort(batch_of, kind="stable")
        parts = []
        with pa.OSFile(self.path) as source:
            reader = pa.ipc.open_file(source)
            for b in np.unique(batch_of):
                batch = reader.get_batch(int(b))
                batch = batch.select(columns) if columns else batch
                parts.append(pa.Table.from_batches([batch]).take(rows[order][batch_of[order] == b] - self.starts[b]))
        return pa.concat_tables(parts).take(np.argsort(order, kind="stable"))


class ArraySpool:
    def __init__(self, path: str, dtype: np.dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        self._file = open(path, "wb")

    def append(self, values: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(values, self.dtype).tobytes())

    def read(self) -> np.ndarray:
        """Everything appended, as one array; the file is removed."""
        self._file.close()
        values = np.fromfile(self.path, self.dtype)
        os.remove(self.path)
        return values
