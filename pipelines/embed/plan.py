"""What an embedding run has to do, planned as columns: the sample table less what the index holds.

The driver streams the few columns of the sample table it needs, batch by batch, drops the videos this model
version already has in the index (an Arrow anti-join against one column of the index) and writes the rest
as Parquet plan files beside the index, one row group per model batch. Ray Data's tasks read them on the
workers, each a run of row groups (`EmbedPlan.parts`: a file and a range, never a row per video). So the
driver holds one column of ids and one batch, and sends no rows through Ray's object store; when nothing is
new it has read a few columns and written nothing.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.shards import sample_batches
from pipelines.storage import Location

PLAN_DIR = ".plans"          # under the index root: hidden, and only the lease holder writes it
PLAN_FILE_ROWS = 1_000_000   # rows per plan file
SAMPLE_COLUMNS = ["id", "shard", "start", "end", "thumb_offset", "thumb_size"]
PLAN_SCHEMA = pa.schema([("video_id", pa.string()), ("tar", pa.string()), ("start", pa.int64()),
                         ("end", pa.int64()), ("thumb_offset", pa.int64()), ("thumb_size", pa.int64())])


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


def plan_embedding(shards: str, done: pa.Array, root: Location, run_id: str, group_rows: int) -> EmbedPlan:
    """Write the samples of `shards` whose id is not in `done` as plan files under `root/.plans/run_id`, in row
    groups of `group_rows`."""
    plan = EmbedPlan(root.child(PLAN_DIR, run_id))
    writer = None
    for folder, batch in sample_batches(shards, SAMPLE_COLUMNS):
        plan.videos += batch.num_rows
        todo = batch.filter(pc.invert(pc.is_in(batch["id"], value_set=done))) if len(done) else batch
        if not todo.num_rows:
            continue
        if writer is not None and writer.rows >= PLAN_FILE_ROWS:
            plan.groups.append(writer.close())
            writer = None
        writer = writer or _PlanFile(plan.file(len(plan.groups)), group_rows)
        tar = pc.binary_join_element_wise(folder.uri + "/", todo["shard"], "")
        writer.add(pa.record_batch([todo["id"], tar, todo["start"], todo["end"], todo["thumb_offset"],
                                    todo["thumb_size"]], schema=PLAN_SCHEMA))
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

    def add(self, batch: pa.RecordBatch) -> None:
        self.held.append(batch)
        self.rows += batch.num_rows
        held = pa.Table.from_batches(self.held)
        whole = held.num_rows // self.group_rows * self.group_rows
        for start in range(0, whole, self.group_rows):
            self._write(held.slice(start, self.group_rows))
        self.held = held.slice(whole).to_batches()

    def _write(self, table: pa.Table) -> None:
        self.file.write_table(table, row_group_size=self.group_rows)
        self.groups += 1

    def close(self) -> int:
        """Write what is held and close; returns the number of row groups."""
        if self.held and (rest := pa.Table.from_batches(self.held)).num_rows:
            self._write(rest)
        self.file.close()
        return self.groups
