"""Which video goes into which shard: an append-only ledger kept beside the shards.

Every run that adds shards first writes its plan (`_plans/plan-NNNNNN.parquet`: shard, split, id, uri,
captions, origin, one row group per shard, at most `PLAN_SHARDS` shards a file), once, under its final name;
then the shards are decoded. The ledger is the union of those plans, so a re-run knows without decoding
anything:
  - which planned shards are not finished yet (a killed run): they are decoded again exactly as planned;
  - which inputs are new: they go into new shards, numbered after the split's last one, sorted by id and
    cut into runs of `samples_per_shard`; finished shards are never rewritten;
  - which planned videos left the inputs: they are recorded as removed (`_removed.parquet`) and skipped by
    every reader, their bytes stay where they are;
  - which ids come back under another path: an error, the same id must mean the same video.
The driver reads the ledger's small columns a batch at a time and keeps 24 bytes a planned video (`Ledger`);
a shard task gets a `ShardRef` (its plan file and its name) and reads its own rows, captions included.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.preprocess.inputs import Inputs
from pipelines.preprocess.sources import INPUT_SCHEMA, VideoInput
from pipelines.preprocess.spool import ArraySpool, RowSpool
from pipelines.shards.format import (
    PLANS_DIR,
    REMOVED,
    REMOVED_SCHEMA,
    plan_name,
    shard_name,
    shard_number,
    write_small_table,
)
from pipelines.shards.id_set import FINGERPRINT, IdSet, fingerprints
from pipelines.storage.location import Location, retrying, spool_dir
from tempme.errors import UserError

LEDGER_SCHEMA = pa.schema([("shard", pa.string()), ("split", pa.string()), ("id", pa.string()),
                           ("uri", pa.string()), ("captions", pa.list_(pa.string())), ("origin", pa.string())])
PLAN_SHARDS = 256          # shards per plan file: a task's read of its row group stays small
LEDGER_COLUMNS = ["shard", "split", "id", "uri"]


class PlanError(UserError):
    """The inputs contradict the shards already planned in the output folder."""


@dataclass(frozen=True)
class ShardPlan:
    split: str
    name: str                         # e.g. train-000000.tar
    videos: tuple[VideoInput, ...]    # in the order they are written


@dataclass(frozen=True)
class ShardRef:
    """A planned shard as the driver holds and sends it: where its rows are, not the rows."""

    split: str
    name: str
    plan: str                         # URI of the plan file that lists its videos
    videos: int

    def load(self) -> ShardPlan:
        """The shard's videos, read from its plan file (its own row group)."""
        loc = Location.of(self.plan)
        rows = retrying(lambda: pq.read_table(loc.path, filesystem=loc.fs, schema=LEDGER_SCHEMA,
                                              filters=pc.field("shard") == self.name))
        return ShardPlan(self.split, self.name, tuple(
            VideoInput(r["id"], r["uri"], tuple(r["captions"]), r["split"], r["origin"]) for r in rows.to_pylist()))


@dataclass(frozen=True)
class NewShard:
    """A shard this run plans: its videos are rows of the inputs' spool."""

    split: str
    name: str
    rows: np.ndarray


class Ledger:
    """Every plan in the output folder, as planning needs it: per planned video its id's fingerprint (`ids`),
    a 32-bit hash of its video and split (`where`) and its shard (`shard_of`, an index into `shards`), all
    in the order of `ids`; per shard its split, size and plan file."""

    def __init__(self, ids: IdSet, where: np.ndarray, shard_of: np.ndarray, shards: list[ShardRef]):
        self.ids, self.where, self.shard_of, self.shards = ids, where, shard_of, shards

    @classmethod
    def read(cls, out: Location) -> Ledger:
        """Stream the small columns of every plan file (empty for a new folder)."""
        index: dict[str, int] = {}
        shards: list[list] = []        # [split, name, plan, videos]
        with tempfile.TemporaryDirectory(dir=spool_dir(), prefix=f"{os.getpid()}-ledger-") as scratch:
            prints, where, shard_of = (ArraySpool(os.path.join(scratch, name), kind) for name, kind in
                                       (("prints", FINGERPRINT), ("where", np.uint32), ("shard", np.uint32)))
            for loc in out.child(PLANS_DIR).list("plan-*.parquet"):
                for batch in _plan_batches(loc):
                    counts = pa.table(batch).group_by(["shard", "split"], use_threads=False).aggregate(
                        [("id", "count")])
                    for name, split, n in zip(*(counts[c].to_pylist() for c in ("shard", "split", "id_count"))):
                        if name not in index:
                            index[name] = len(shards)
                            shards.append([split, name, loc.uri, 0])
                        shards[index[name]][3] += n
                    at = np.array([index[name] for name in counts["shard"].to_pylist()], np.uint32)
                    shard_of.append(at[pc.index_in(batch.column("shard"), value_set=counts["shard"]).to_numpy()])
                    prints.append(fingerprints(batch.column("id")))
                    where.append(_where(batch))
            ids, order = IdSet.ordering(prints.read())
            return cls(ids, where.read()[order], shard_of.read()[order], [ShardRef(*s) for s in shards])

    def __len__(self) -> int:
        return len(self.ids)

    def names(self) -> set[str]:
        return {s.name for s in self.shards}

    def pending(self, finished: set[str]) -> list[ShardRef]:
        """The shards that are not finished, exactly as they were planned."""
        return [s for s in self.shards if s.name not in finished]

    def last_numbers(self) -> dict[str, int]:
        """The highest shard number planned so far in each split."""
        last: dict[str, int] = {}
        for s in self.shards:
            last[s.split] = max(last.get(s.split, -1), shard_number(s.name))
        return last

    def last_shards(self, ids: list[str]) -> dict[str, str]:
        """The shard each of `ids` was last planned in (ids the ledger lacks are left out)."""
        prints = fingerprints(pa.array(ids, pa.string()))
        found = {}
        for vid, at, a, b in zip(ids, self.ids.find(prints).tolist(), prints["a"], prints["b"]):
            if at < 0:
                continue
            last = at
            while last + 1 < len(self) and self.ids.high[last + 1] == a and self.ids.low[last + 1] == b:
                last += 1
            found[vid] = self.shards[int(self.shard_of[at:last + 1].max())].name
        return found

    def check_same_videos(self, out: Location, inputs: Inputs, found: np.ndarray) -> None:
        """Raise PlanError if an input id is already planned with another video path or URI, or in another
        split. `found`: where each input row's id sits in the ledger (`ids.find`)."""
        clash, start = [], 0
        for batch in inputs.rows.batches(["uri", "split"]):
            at = found[start:start + batch.num_rows]
            known = at >= 0
            if known.any():
                clash.append(start + np.flatnonzero(known)[self.where[at[known]] != _where(batch)[known]])
            start += batch.num_rows
        clash = np.concatenate(clash) if clash else np.zeros(0, np.int64)
        if not len(clash):
            return
        given = inputs.videos(clash[:1])[0]
        planned = _planned_rows(out, given.id)[0]
        what = "from" if planned["uri"] != given.uri else "in split"
        mine, theirs = (given.uri, planned["uri"]) if what == "from" else (given.split, planned["split"])
        raise PlanError(f"video id {given.id!r} is given {what} {mine} but is already planned {what} {theirs} "
                        f"(shard {planned['shard']}); {len(clash)} ids clash like this. An id must always name "
                        "the same video in the same split: give new videos new ids, or write to a new output "
                        "folder")

    def removed(self, out: Location, found: np.ndarray, splits: tuple[str, ...] | None, recorded: pa.Table
                ) -> pa.Table:
        """(id, split) of every planned video that the inputs no longer list, sorted by id. `found`: where each
        input row's id sits in the ledger. With `splits`, only those splits were given: the other splits keep
        what `recorded` (the removed table so far) says."""
        listed = np.zeros(len(self), bool)
        listed[found[found >= 0]] = True
        kept = recorded.slice(0, 0)
        if splits:
            kept = recorded.filter(pc.invert(pc.is_in(recorded["split"], value_set=pa.array(list(splits)))))
        gone = [kept.select(["id", "split"]).cast(REMOVED_SCHEMA)]
        if not self._all_listed(listed):
            for loc in out.child(PLANS_DIR).list("plan-*.parquet"):
                for batch in _plan_batches(loc, ["id", "split"]):
                    left = ~listed[self.ids.find(fingerprints(batch.column("id")))]
                    if splits:
                        left &= pc.is_in(batch.column("split"), value_set=pa.array(list(splits))).to_numpy(
                            zero_copy_only=False)
                    if left.any():
                        gone.append(pa.table(batch).filter(pa.array(left)).cast(REMOVED_SCHEMA))
        table = pa.concat_tables(gone)
        pairs = table.group_by(["id", "split"], use_threads=False).aggregate([])
        return pairs.select(["id", "split"]).sort_by([("id", "ascending"), ("split", "ascending")])

    def _all_listed(self, listed: np.ndarray) -> bool:
        """Whether every planned id was found in the inputs (a found id marks the first of its ledger rows)."""
        if not len(self):
            return True
        starts = np.ones(len(self), bool)
        starts[1:] = (self.ids.high[1:] != self.ids.high[:-1]) | (self.ids.low[1:] != self.ids.low[:-1])
        return bool(listed[starts].all())


def _plan_batches(loc: Location, columns: list[str] = LEDGER_COLUMNS) -> Iterator[pa.RecordBatch]:
    """Some columns of one plan file, a row group at a time (each read again if the store fails meanwhile)."""
    file = retrying(lambda: pq.ParquetFile(loc.fs.open_input_file(loc.path)))
    for group in range(file.num_row_groups):
        yield from retrying(lambda: list(file.iter_batches(batch_size=1 << 16, row_groups=[group],
                                                           columns=columns)))


def _where(rows: pa.RecordBatch | pa.Table) -> np.ndarray:
    """32 bits of each row's video and split: an id planned before must come back with the same."""
    joined = pc.binary_join_element_wise(rows.column("uri"), rows.column("split"), "\n")
    return fingerprints(joined)["a"].astype(np.uint32)


def _planned_rows(out: Location, vid: str) -> list[dict]:
    """The ledger's rows of one id (to name a clash)."""
    rows = []
    for loc in out.child(PLANS_DIR).list("plan-*.parquet"):
        table = retrying(lambda loc=loc: pq.read_table(loc.path, filesystem=loc.fs, columns=LEDGER_COLUMNS,
                                                       filters=pc.field("id") == vid))
        rows += table.to_pylist()
    return rows


def plan_new(inputs: Inputs, rows: np.ndarray, samples_per_shard: int, after: dict[str, int]) -> list[NewShard]:
    """New shards for the input rows `rows`: per split sorted by id, in runs of `samples_per_shard`, numbered
    from `after[split] + 1` (from 0 for a split with no shard yet)."""
    keys = inputs.rows.take(rows, ["split", "id"])
    order = pc.sort_indices(keys, sort_keys=[("split", "ascending"), ("id", "ascending")]).to_numpy()
    rows, splits = rows[order], keys["split"].take(order).to_numpy(zero_copy_only=False)
    plans = []
    for split in sorted(set(splits.tolist())):
        of_split = rows[splits == split]
        first = after.get(split, -1) + 1
        for number, start in enumerate(range(0, len(of_split), samples_per_shard), start=first):
            plans.append(NewShard(split, shard_name(split, number), of_split[start:start + samples_per_shard]))
    return plans


def write_plans(out: Location, inputs: Inputs, shards: list[NewShard]) -> list[ShardRef]:
    """Add `shards` to the ledger (before any of them is written), `PLAN_SHARDS` to a file; returns them as
    references for the tasks. The inputs' spool is read once, its rows sent to one local file per plan file,
    so memory holds one plan file's rows however many are planned."""
    folder = out.child(PLANS_DIR)
    folder.make_dirs()
    existing = folder.list("plan-*.parquet")
    number = int(existing[-1].name.split("-")[1].split(".")[0]) + 1 if existing else 0
    groups = [shards[start:start + PLAN_SHARDS] for start in range(0, len(shards), PLAN_SHARDS)]
    with tempfile.TemporaryDirectory(dir=spool_dir(), prefix=f"{os.getpid()}-plans-") as scratch:
        parts = _sorted_into_groups(inputs, groups, scratch)
        refs = []
        for n, (group, part) in enumerate(zip(groups, parts)):
            loc = folder.child(plan_name(number + n))
            rows = part.read().sort_by("at")
            sink = pa.BufferOutputStream()
            with pq.ParquetWriter(sink, LEDGER_SCHEMA, compression="zstd") as writer:
                start = 0
                for s in group:
                    one = rows.slice(start, len(s.rows))
                    writer.write_table(pa.table([pa.array([s.name] * len(s.rows), pa.string()),
                                                 one["split"], one["id"], one["uri"], one["captions"],
                                                 one["origin"]], schema=LEDGER_SCHEMA), row_group_size=len(s.rows))
                    start += len(s.rows)
            loc.write_atomic(sink.getvalue().to_pybytes())
            refs += [ShardRef(s.split, s.name, loc.uri, len(s.rows)) for s in group]
    return refs


def _sorted_into_groups(inputs: Inputs, groups: list[list[NewShard]], scratch: str) -> list[RowSpool]:
    """One pass over the inputs' spool: each planned row goes to its group's local file, with its place in
    the group (`at`)."""
    rows = np.concatenate([s.rows for group in groups for s in group])
    group_of = np.concatenate([np.full(sum(len(s.rows) for s in group), g, np.int32) for g, group in enumerate(groups)])
    at = np.concatenate([np.arange(sum(len(s.rows) for s in group)) for group in groups])
    order = np.argsort(rows, kind="stable")
    rows, group_of, at = rows[order], group_of[order], at[order]
    schema = INPUT_SCHEMA.append(pa.field("at", pa.int64()))
    parts = [RowSpool(os.path.join(scratch, f"{g}.arrow"), schema) for g in range(len(groups))]
    for batch, first, end in zip(inputs.rows.batches(), inputs.rows.starts, inputs.rows.starts[1:]):
        lo, hi = np.searchsorted(rows, [first, end])
        for g in np.unique(group_of[lo:hi]):
            mine = np.flatnonzero(group_of[lo:hi] == g) + lo
            picked = pa.Table.from_batches([batch]).take(rows[mine] - first)
            parts[g].write(picked.append_column("at", pa.array(at[mine])))
    for part in parts:
        part.close()
    return parts


def forget_plans(out: Location) -> int:
    """Delete every plan (only while no shard is finished: their options no longer hold); returns how many."""
    files = out.child(PLANS_DIR).list("*")
    for loc in files:
        loc.delete()
    return len(files)


def record_removed(out: Location, removed: pa.Table, recorded: pa.Table) -> bool:
    """Write the removed table if it changed from `recorded` (a re-run with nothing new rewrites nothing)."""
    if recorded.equals(removed):
        return False
    write_small_table(out.child(REMOVED), removed)
    return True
