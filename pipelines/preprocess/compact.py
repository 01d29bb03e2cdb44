"""Compacting a shard folder: the shards that hold removed videos are written again without them.

A video that left the inputs is only recorded as removed (`_removed.parquet`); its bytes stay in its shard.
A takedown, or a corpus that lost a large share of its videos, needs the bytes gone. `compact_shards` picks
the shards whose removed share of samples reaches a threshold, and a Ray task per shard copies the kept
samples' bytes as they are (nothing is decoded) into the shard's next generation (`train-000007.g1.tar`),
with its rows of the sample table: the kept samples at their new offsets, each removed video as a row of
stage "compacted" without bytes (so the shard stays finished for the ledger). One commit of the table then
swaps the old rows for the new: readers see the old shards or the new ones, never a mix. The old tars are
retired (`_retired.parquet`), not deleted, since readers that opened the table before may still read them;
a later compaction deletes those retired for longer than `keep` (the time old table versions are kept).
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

import lance
import pyarrow as pa
import pyarrow.compute as pc
from lance import LanceOperation
from lance.fragment import FragmentMetadata

from pipelines.cluster.connect import check_stores_from_a_worker, connect
from pipelines.options import ClusterOptions, option
from pipelines.preprocess.plan import ShardPlan
from pipelines.preprocess.writer import ShardWriter
from pipelines.shards.format import (
    RETIRED,
    RETIRED_SCHEMA,
    SAMPLE_FILTER,
    SAMPLES,
    VERSIONS_KEPT,
    folder_lease,
    frame_member,
    next_generation,
    read_removed,
    read_retired,
    sample_table,
    sql_text,
    upgrade_samples,
    write_small_table,
)
from pipelines.shards.id_set import IdSet, fingerprints
from pipelines.storage.lease import Lease, run_name
from pipelines.storage.location import Location, lance_options, retrying
from tempme.errors import UserError

COMPACTED = "left the inputs; its bytes were compacted away"


@dataclass
class CompactReport:
    shards: dict[str, str]          # old shard -> its new generation
    removed_bytes: int              # bytes of removed samples no longer in any live shard
    deleted: list[str]              # retired tars deleted (retired longer than `keep`)


@dataclass
class CompactOptions(ClusterOptions):
    folder: str = option(help="a shard folder or URI (tempme preprocess --out)", positional=True, metavar="FOLDER")
    min_removed: float = option(0.25, "write a shard again when at least this share of its samples is removed "
                                      "(0: any shard with a removed video)", metavar="SHARE")
    keep_days: float = option(VERSIONS_KEPT.days, "delete the tars retired by earlier compactions after this many "
                                                  "days (as old versions of the sample table)")

    def __post_init__(self):
        if not 0 <= self.min_removed <= 1:
            raise UserError(f"--min-removed must be from 0 to 1, got {self.min_removed}")
        if self.keep_days < 0:
            raise UserError(f"--keep-days must be 0 or more, got {self.keep_days}")


def compact_shards(options: CompactOptions, log: Callable[[str], None] = print) -> CompactReport:
    """Write again every shard whose removed samples are at least `min_removed` of its samples, holding the
    folder's lease (no preprocess run writes it meanwhile)."""
    out = Location.of(options.folder)
    with folder_lease(out, run_name(), "compact-shards run") as lease:
        return _compact(out, options.min_removed, dt.timedelta(days=options.keep_days), log, options.ray_address,
                        lease)


def _compact(out: Location, min_share: float, keep: dt.timedelta, log: Callable[[str], None],
             ray_address: str | None, lease: Lease) -> CompactReport:
    deleted = _delete_retired(out, keep)
    chosen = shards_to_compact(out, min_share)
    if not chosen:
        log(f"compact-shards: {out.uri}: no shard has {min_share:.0%} or more of its samples removed"
            + (f"; deleted {len(deleted)} retired tars" if deleted else ""))
        return CompactReport({}, 0, deleted)
    log(f"compact-shards: writing {len(chosen)} shards again without their removed videos")
    removed = read_removed(out)["id"]
    done = _run_tasks(out, sorted(chosen), removed, ray_address)
    lease.check()
    upgrade_samples(out)
    _swap(out, {old: new for old, (new, _) in done.items()}, [f for _, frags in done.values() for f in frags])
    _retire(out, sorted(done))
    freed = sum(chosen.values())
    log(f"compact-shards: {len(done)} shards written again, {freed / 1e6:.1f} MB of removed samples dropped; "
        f"the old tars are retired and deleted by a compaction after {keep.days} days")
    return CompactReport({old: new for old, (new, _) in done.items()}, freed, deleted)


def shards_to_compact(out: Location, min_share: float) -> dict[str, int]:
    """Shard -> bytes of its removed samples, for the shards over the threshold (one streamed read)."""
    ds = sample_table(out)
    gone = IdSet([read_removed(out)["id"]])
    if ds is None or not len(gone):
        return {}
    parts = []
    for batch in ds.to_batches(columns=["id", "shard", "start", "end"], filter=SAMPLE_FILTER):
        removed = pa.array(gone.holds(fingerprints(batch.column("id"))))
        size = pc.subtract(batch.column("end"), batch.column("start"))
        parts.append(pa.table({"shard": batch.column("shard"), "removed": removed,
                               "gone_bytes": pc.if_else(removed, size, 0)})
                     .group_by("shard").aggregate([("removed", "count"), ("removed", "sum"), ("gone_bytes", "sum")]))
    if not parts:
        return {}
    per = pa.concat_tables(parts).group_by("shard").aggregate(
        [("removed_count", "sum"), ("removed_sum", "sum"), ("gone_bytes_sum", "sum")])
    samples, removed = per["removed_count_sum"].to_numpy(), per["removed_sum_sum"].to_numpy()
    pick = (removed > 0) & (removed >= min_share * samples)
    return dict(zip(per["shard"].filter(pa.array(pick)).to_pylist(),
                    per["gone_bytes_sum_sum"].filter(pa.array(pick)).to_pylist()))


def rewrite_shard(out_uri: str, shard: str, removed: pa.Array) -> tuple[str, list[str]]:
    """Copy `shard`'s kept samples into its next generation; returns (its name, its rows' fragments)."""
    out = Location.of(out_uri)
    rows = sample_table(out).to_table(filter=f"shard = {sql_text(shard)}").sort_by("start")
    gone = IdSet([removed]).holds(fingerprints(rows["id"]))
    new = next_generation(shard)
    writer = ShardWriter(out, ShardPlan(rows["split"][0].as_py(), new, ()))
    old = out.child(shard)
    try:
        with retrying(lambda: old.fs.open_input_file(old.path)) as tar:
            for row, left in zip(rows.to_pylist(), gone.tolist()):
                writer.add(_result(row, tar, left))
        counts = writer.commit()
    except BaseException:
        writer.discard()
        raise
    return new, counts["fragments"]


def _result(row: dict, tar, left: bool) -> dict:
    """A sample-table row as the shard writer takes a decoder's result: the sample's bytes copied as they are,
    or no bytes for a removed video or a video that had failed."""
    result = {"id": row["id"], "split": row["split"], "uri": row["source"], "key": row["key"],
              "stage": row["stage"], "error": row["error"]}
    if row["error"]:
        return result
    if left:
        return {**result, "key": "", "stage": "compacted", "error": COMPACTED}
    sample = {"key": row["key"], "fragment": retrying(lambda: tar.read_at(row["end"] - row["start"], row["start"])),
              "members": json.dumps({frame_member(0): [row["thumb_offset"] - row["start"], row["thumb_size"]]}),
              "valid": row["valid"], "window_start": row["window_start"], "window_end": row["window_end"]}
    return {**result, "samples": [sample], "captions": row["captions"], "method": ""}


def _run_tasks(out: Location, shards: list[str], removed: pa.ChunkedArray, ray_address: str | None
               ) -> dict[str, tuple[str, list[str]]]:
    """One Ray task per shard, where Ray places it (the bytes move between the store and the workers)."""
    import ray

    connect(ray_address)
    check_stores_from_a_worker([("shard folder", out.uri)])
    task = ray.remote(num_cpus=1)(rewrite_shard)
    removed_ref = ray.put(removed.combine_chunks())
    refs = {shard: task.remote(out.uri, shard, removed_ref) for shard in shards}
    return {shard: ray.get(ref) for shard, ref in refs.items()}


def _swap(out: Location, renamed: dict[str, str], fragments: list[str]) -> None:
    """One commit: the old shards' rows leave the table (deletion files on the fragments that hold them) and
    the new generations' rows join it. A concurrent append (a preprocess run) does not conflict with it."""
    ds = sample_table(out)
    names = ", ".join(sql_text(name) for name in renamed)
    predicate = f"shard IN ({names})"
    updated, removed = [], []
    for fragment in ds.get_fragments():
        if fragment.count_rows(predicate):
            left = fragment.delete(predicate)
            if left is None:
                removed.append(fragment.fragment_id)
            else:
                updated.append(left)
    loc = out.child(SAMPLES)
    lance.LanceDataset.commit(loc.uri, LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated,
                                                              new_fragments=[FragmentMetadata.from_json(f)
                                                                             for f in fragments]),
                              read_version=ds.version, storage_options=lance_options(loc.uri))


def _retire(out: Location, shards: list[str]) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    table = pa.concat_tables([read_retired(out), pa.table({"shard": shards, "retired_at": [now] * len(shards)},
                                                          schema=RETIRED_SCHEMA)])
    write_small_table(out.child(RETIRED), table)


def _delete_retired(out: Location, keep: dt.timedelta) -> list[str]:
    """Delete the tars retired longer than `keep` ago; returns their names."""
    table = read_retired(out)
    if not table.num_rows:
        return []
    cutoff = pa.scalar(dt.datetime.now(dt.UTC) - keep, RETIRED_SCHEMA.field("retired_at").type)
    old = pc.less_equal(table["retired_at"], cutoff)
    names = table.filter(old)["shard"].to_pylist()
    for name in names:
        loc = out.child(name)
        if retrying(loc.exists):
            retrying(loc.delete)
    if names:
        write_small_table(out.child(RETIRED), table.filter(pc.invert(old)))
    return names
