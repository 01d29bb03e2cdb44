"""Which video goes into which shard: an append-only ledger kept beside the shards.

Every run that adds shards first writes its plan (`_plans/plan-NNNNNN.parquet`: shard, split, id, uri,
captions, origin, in write order), once, under its final name; then the shards are decoded. The ledger is
the union of those plans, so a re-run knows without decoding anything:
  - which planned shards are not finished yet (a killed run): they are decoded again exactly as planned;
  - which inputs are new: they go into new shards, numbered after the split's last one, sorted by id and
    cut into runs of `samples_per_shard`; finished shards are never rewritten;
  - which planned videos left the inputs: they are recorded as removed (`_removed.parquet`) and skipped by
    every reader, their bytes stay where they are;
  - which ids come back under another path: an error, the same id must mean the same video.
The ledger is held and queried as Arrow columns (only the shards to decode now become `ShardPlan`s); the
inputs themselves are still read into one Python object per video.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.shard_format import PLANS_DIR, REMOVED, REMOVED_SCHEMA, plan_name, shard_name, shard_number
from pipelines.preprocess.sources import VideoInput
from pipelines.storage import Location, retrying
from tempme.errors import UserError

LEDGER_SCHEMA = pa.schema([("shard", pa.string()), ("split", pa.string()), ("id", pa.string()),
                           ("uri", pa.string()), ("captions", pa.list_(pa.string())), ("origin", pa.string())])


class PlanError(UserError):
    """The inputs contradict the shards already planned in the output folder."""


@dataclass(frozen=True)
class ShardPlan:
    split: str
    name: str                         # e.g. train-000000.tar
    videos: tuple[VideoInput, ...]    # in the order they are written

    @property
    def ids(self) -> list[str]:
        return [v.id for v in self.videos]


def plan_shards(inputs: list[VideoInput], samples_per_shard: int, after: dict[str, int] | None = None
                ) -> list[ShardPlan]:
    """New shards for `inputs`: per split sorted by id, in runs of `samples_per_shard`, numbered from
    `after[split] + 1` (from 0 for a split with no shard yet)."""
    by_split: dict[str, list[VideoInput]] = defaultdict(list)
    for video in inputs:
        by_split[video.split].append(video)
    plans = []
    for split in sorted(by_split):
        videos = sorted(by_split[split], key=lambda v: v.id)
        first = (after or {}).get(split, -1) + 1
        for number, start in enumerate(range(0, len(videos), samples_per_shard), start=first):
            plans.append(ShardPlan(split, shard_name(split, number), tuple(videos[start:start + samples_per_shard])))
    return plans


def read_ledger(out: Location) -> pa.Table:
    """Every plan written into `out` so far, in order (empty for a new folder)."""
    files = out.child(PLANS_DIR).list("plan-*.parquet")
    tables = [retrying(lambda loc=loc: pq.read_table(pa.BufferReader(loc.read_bytes()), schema=LEDGER_SCHEMA))
              for loc in files]
    return pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()


def write_plan(out: Location, plans: list[ShardPlan]) -> pa.Table:
    """Add `plans` to the ledger as one new plan file (before any of their shards is written); returns its rows."""
    rows = [(p.name, p.split, v.id, v.uri, list(v.captions), v.origin) for p in plans for v in p.videos]
    table = pa.Table.from_pylist([dict(zip(LEDGER_SCHEMA.names, r)) for r in rows], schema=LEDGER_SCHEMA)
    folder = out.child(PLANS_DIR)
    folder.make_dirs()
    existing = folder.list("plan-*.parquet")
    number = int(existing[-1].name.split("-")[1].split(".")[0]) + 1 if existing else 0
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    folder.child(plan_name(number)).write_atomic(sink.getvalue().to_pybytes())
    return table


def check_same_videos(ledger: pa.Table, inputs: list[VideoInput]) -> None:
    """Raise PlanError if an input id is already planned with another video path or URI, or in another split."""
    given = pa.table({"id": pa.array([v.id for v in inputs], pa.string()),
                      "given": pa.array([v.uri for v in inputs], pa.string()),
                      "given_split": pa.array([v.split for v in inputs], pa.string())})
    planned = ledger.select(["id", "uri", "split", "shard"])
    joined = given.join(planned, "id", join_type="inner")
    for column, other, what in (("given", "uri", "from"), ("given_split", "split", "in split")):
        clash = joined.filter(pc.not_equal(joined[column], joined[other]))
        if clash.num_rows:
            first = clash.slice(0, 1).to_pylist()[0]
            raise PlanError(f"video id {first['id']!r} is given {what} {first[column]} but is already planned "
                            f"{what} {first[other]} (shard {first['shard']}); {clash.num_rows} ids clash like this. "
                            "An id must always name the same video in the same split: give new videos new ids, "
                            "or write to a new output folder")


def unplanned(ledger: pa.Table, inputs: list[VideoInput]) -> list[VideoInput]:
    """The inputs the ledger has never planned: a grown corpus's new videos."""
    known = pc.is_in(pa.array([v.id for v in inputs], pa.string()), value_set=ledger["id"].combine_chunks())
    return [v for v, planned in zip(inputs, known.to_pylist()) if not planned]


def last_shards(ledger: pa.Table, ids: list[str]) -> dict[str, str]:
    """The shard each of `ids` was last planned in (ids the ledger lacks are left out)."""
    rows = ledger.filter(pc.is_in(ledger["id"], pa.array(ids, pa.string()))).select(["id", "shard"])
    return dict(zip(rows["id"].to_pylist(), rows["shard"].to_pylist()))


def forget_plans(out: Location) -> int:
    """Delete every plan (only while no shard is finished: their options no longer hold); returns how many."""
    files = out.child(PLANS_DIR).list("*")
    for loc in files:
        loc.delete()
    return len(files)


def pending_plans(ledger: pa.Table, finished: set[str]) -> list[ShardPlan]:
    """The ledger's shards that are not finished, exactly as they were planned."""
    if not ledger.num_rows:
        return []
    todo = ledger.filter(pc.invert(pc.is_in(ledger["shard"], pa.array(sorted(finished), pa.string()))))
    grouped: dict[tuple[str, str], list[VideoInput]] = defaultdict(list)
    for r in todo.to_pylist():
        grouped[(r["split"], r["shard"])].append(
            VideoInput(r["id"], r["uri"], tuple(r["captions"]), r["split"], r["origin"]))
    return [ShardPlan(split, name, tuple(videos)) for (split, name), videos in grouped.items()]


def last_numbers(ledger: pa.Table) -> dict[str, int]:
    """The highest shard number planned so far in each split (names are zero-padded: the largest is last)."""
    last = ledger.group_by("split").aggregate([("shard", "max")])
    return {split: shard_number(shard) for split, shard in zip(last["split"].to_pylist(), last["shard_max"].to_pylist())}


def removed_videos(ledger: pa.Table, inputs: list[VideoInput], splits: tuple[str, ...] | None,
                   recorded: pa.Table) -> pa.Table:
    """(id, split) of every planned video that the inputs no longer list, sorted by id. With `splits`,
    only those splits were given: the other splits keep what `recorded` (the removed table so far) says."""
    planned = ledger.select(["id", "split"])
    kept: set[tuple[str, str]] = set()
    if splits:
        given = pa.array(list(splits), pa.string())
        planned = planned.filter(pc.is_in(planned["split"], given))
        others = recorded.filter(pc.invert(pc.is_in(recorded["split"], given)))
        kept = set(zip(others["id"].to_pylist(), others["split"].to_pylist()))
    gone = planned.filter(pc.invert(pc.is_in(planned["id"], pa.array([v.id for v in inputs], pa.string()))))
    pairs = sorted(kept | set(zip(gone["id"].to_pylist(), gone["split"].to_pylist())))
    return pa.table({"id": [i for i, _ in pairs], "split": [s for _, s in pairs]}, schema=REMOVED_SCHEMA)


def record_removed(out: Location, removed: pa.Table, recorded: pa.Table) -> bool:
    """Write the removed table if it changed from `recorded` (a re-run with nothing new rewrites nothing)."""
    if recorded.equals(removed):
        return False
    sink = pa.BufferOutputStream()
    pq.write_table(removed, sink)
    out.child(REMOVED).write_atomic(sink.getvalue().to_pybytes())
    return True
