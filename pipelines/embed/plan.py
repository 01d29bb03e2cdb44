"""What an embedding run has to do, planned as columns: the sample table less what the index holds.

The anti-join is done on 128-bit fingerprints of the ids (`pipelines.shards.id_set`, 16 bytes a video): the ids
this model version already has in the index are streamed from it into an `IdSet`, then each
folder's sample table is streamed (`id`, `error`) and every sample that is neither removed nor done is a row
position to take. Those rows' few other columns are taken from the table a chunk at a time and written as
Parquet plan files beside the index, one row group per model batch. Ray Data's tasks read them on the
workers, each a run of row groups (`EmbedPlan.parts`: a file and a range, never a row per video). So the
driver holds 16 bytes per embedded video and 8 per video to embed, sends no rows through Ray's object store,
and when nothing is new it has read two columns of each table and written nothing.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.shards.format import read_removed, sample_names
from pipelines.shards.id_set import IdSet, fingerprints
from pipelines.shards.reader import samples_of
from pipelines.storage.location import Location

PLAN_DIR = ".plans"          # under the index root: hidden, and only the lease holder writes it
PLAN_FILE_ROWS = 1_000_000   # rows per plan file
TAKE_ROWS = 100_000          # rows the driver takes from the sample table at once
SAMPLE_COLUMNS = ["id", "shard", "start", "end", "thumb_offset", "thumb_size", "source"]
WINDOW_COLUMNS = ["window_start", "window_end"]   # absent from tables written before windows: whole videos
PLAN_SCHEMA = pa.schema([("video_id", pa.string()), ("tar", pa.string()), ("start", pa.int64()),
                         ("end", pa.int64()), ("thumb_offset", pa.int64()), ("thumb_size", pa.int64()),
                         ("source", pa.string()), ("window_start", pa.float64()), ("window_end", pa.float64())])


@dataclass
class EmbedPlan:
    folder: Location          # where the plan files are
    videos: int = 0           # videos in the shards (less the removed ones)
    todo: int = 0             # of them, not yet in the index for this model version
    groups: list[int] = field(default_factory=list)   # row groups of each plan file (part-00000, ...)

    def file(self, number: int) -> Location:
        return self.folder.child(f"part-{number:05d}.parquet")

    def parts(self, most: int) -> list[dict]:
        """At most `most` runs of row groups covering the plan: {uri, first, count} each."""
        total = sum(self.groups)
        size = max(1, math.ceil(total / most)) if total else 1
        return [{"uri": self.file(n).uri, "first": first, "count": min(size, groups - first)}
                for n, groups in enumerate(self.groups) for first in range(0, groups, size)]

    def remove(self) -> None:
        self.folder.fs.delete_dir_contents(self.folder.path, missing_dir_ok=True)


def plan_embedding(shards: Sequence[str], done: Iterable[pa.Array], root: Location, run_id: str, group_rows: int
                   ) -> EmbedPlan:
    """Write the samples of `shards` whose name (`sample_names`: a video's id, or a window's) is not among
    `done` (batches of names) as plan files under `root/.plans/run_id`, in row groups of `group_rows`."""
    plan = EmbedPlan(root.child(PLAN_DIR, run_id))
    known = IdSet(done)
    writer = None
    for folder in map(Location.of, shards):
        ds = samples_of(folder)
        if ds is None:
            continue
        removed = IdSet([read_removed(folder)["id"]])
        windows = [c for c in WINDOW_COLUMNS if c in ds.schema.names]
        positions, offset = [], 0
        starts = ["window_start"] if windows else []
        for batch in ds.to_batches(columns=["id", "error", *starts]):      # the order `take` counts rows in
            wanted = pc.equal(batch["error"], "").to_numpy(zero_copy_only=False)
            wanted &= ~removed.holds(fingerprints(batch["id"]))
            plan.videos += int(wanted.sum())
            names = sample_names(batch["id"], batch["window_start"] if windows else None)
            positions.append(np.flatnonzero(wanted & ~known.holds(fingerprints(names))) + offset)
            offset += batch.num_rows
        positions = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        for first in range(0, len(positions), TAKE_ROWS):
            todo = ds.take(positions[first:first + TAKE_ROWS], columns=SAMPLE_COLUMNS + windows)
            if writer is not None and writer.rows >= PLAN_FILE_ROWS:
                plan.groups.append(writer.close())
                writer = None
            writer = writer or _PlanFile(plan.file(len(plan.groups)), group_rows)
            tar = pc.binary_join_element_wise(folder.uri + "/", todo["shard"], "")
            window = [todo[c] if windows else pa.nulls(todo.num_rows, pa.float64()) for c in WINDOW_COLUMNS]
            writer.add(pa.table([todo["id"], tar, todo["start"], todo["end"], todo["thumb_offset"],
                                 todo["thumb_size"], todo["source"], *window], schema=PLAN_SCHEMA))
            plan.todo += todo.num_rows
    if writer is not None:
        plan.groups.append(writer.close())
    return plan


def read_part(parts: pa.Table) -> Iterator[pa.Table]:
    """Ray Data batch function: plan parts ({uri, first, count}) -> their row groups, one batch each."""
    for part in parts.to_pylist():
        loc = Location.of(part["uri"])
        with loc.fs.open_input_file(loc.path) as f:
            file = pq.ParquetFile(f)
            for group in range(part["first"], part["first"] + part["count"]):
                yield file.read_row_group(group)


class _PlanFile:
    """One plan file, written in row groups of exactly `group_rows` (the last one shorter)."""

    def __init__(self, loc: Location, group_rows: int):
        loc.parent().make_dirs()
        self.file = pq.ParquetWriter(loc.path, PLAN_SCHEMA, filesystem=loc.fs)
        self.group_rows, self.rows, self.groups = group_rows, 0, 0
        self.held: list[pa.RecordBatch] = []

    def add(self, table: pa.Table) -> None:
        self.held.extend(table.to_batches())
        self.rows += table.num_rows
        held = pa.Table.from_batches(self.held, schema=PLAN_SCHEMA)
        whole = held.num_rows // self.group_rows * self.group_rows
        for start in range(0, whole, self.group_rows):
            self._write(held.slice(start, self.group_rows))
        self.held = held.slice(whole).to_batches()

    def _write(self, table: pa.Table) -> None:
        self.file.write_table(table, row_group_size=self.group_rows)
        self.groups += 1

    def close(self) -> int:
        """Write what is held and close; returns the number of row groups."""
        if self.held and (rest := pa.Table.from_batches(self.held, schema=PLAN_SCHEMA)).num_rows:
            self._write(rest)
        self.file.close()
        return self.groups
