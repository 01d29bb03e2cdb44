"""The shard folder's format: names, the sample table's schema, the removed-video table and the splits.

The writer (`pipelines.preprocess`) and every reader (`pipelines.shards.reader`, embedding, training, evaluation)
import this module, and nothing of each other.

    OUT/train-000000.tar            shards; videos of a split sorted by id, `samples_per_shard` per shard
    OUT/_samples.lance              the sample table: one row per planned video of every finished shard
                                    (SAMPLE_SCHEMA); the worker that wrote a shard writes its rows' data
                                    file after the tar, the job commits them in batches; a shard is
                                    finished when its rows are committed
    OUT/_summary.json               samples, shards, bytes, frames, failures per split (the size of the
                                    corpus's splits, not of its history)
    OUT/_failures.csv               the failure table: input, id, split, stage, error
    OUT/_index/options.json         the options that shaped the shards, checked when a job resumes
    OUT/_index/train-000000.json    per-shard catalogs of folders written before the sample table
                                    (`tempme upgrade-shards` turns them into it, once)
    OUT/_plans/plan-000000.parquet  which video goes into which shard, up to 256 shards a file (a row group
                                    each), written before its shards (the ledger of the append-only folder)
    OUT/_removed.parquet            ids (and splits) of videos that left the inputs: readers skip them
    OUT/train-000000.g1.tar         a shard written again without its removed videos (`tempme
                                    compact-shards`); its rows name it, the older generation is retired
    OUT/_retired.parquet            tars no row names any more, and since when: deleted after VERSIONS_KEPT
    OUT/_lease.lance                which run writes the folder now (`folder_lease`): one writer at a time

Names starting with "_" or "." (tables, summary, unfinished files) are skipped by
`ray.data.read_webdataset(OUT)`, so the folder reads as the shards alone.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

import lance
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lance import LanceOperation
from lance.fragment import FragmentMetadata, write_fragments

from pipelines.storage.lease import Busy, Lease
from pipelines.storage.location import Location, lance_options, retrying, sql_text

FORMAT = "tempme-shards/2"    # 2: the sample table replaces per-shard catalogs
SUMMARY = "_summary.json"
FAILURES = "_failures.csv"
SAMPLES = "_samples.lance"
CATALOG_DIR = "_index"   # options.json, and the per-shard catalogs of folders written before the sample table
OPTIONS = "options.json"
PLANS_DIR = "_plans"
REMOVED = "_removed.parquet"
RETIRED = "_retired.parquet"
LEASE = "_lease.lance"
META_MEMBER = "json"
FAILURE_COLUMNS = ("input", "id", "split", "stage", "error")
CAPTIONED_SPLITS = ("train", "val", "test")   # trained and evaluated on: every video needs a caption
CORPUS = "corpus"          # a library's videos, embedded and searched only: captions optional
KNOWN_SPLITS = (*CAPTIONED_SPLITS, CORPUS)

# One row per planned video of a finished shard: a sample (error "") or why the video gave none.
SAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()), ("split", pa.string()),
    ("shard", pa.string()),            # the tar's name in the folder
    ("key", pa.string()),              # the sample's WebDataset key
    ("source", pa.string()),           # the input video's path or URI
    ("start", pa.int64()), ("end", pa.int64()),   # the sample's bytes [start, end) in the tar
    ("valid", pa.int32()),             # real frames (the rest are padding)
    ("captions", pa.int32()),          # how many; the texts are in the sample's JSON member
    ("thumb_offset", pa.int64()), ("thumb_size", pa.int64()),   # the first frame's JPEG in the tar
    ("stage", pa.string()), ("error", pa.string()),             # "" for a sample; else see STAGES
    # the window of the video the sample holds (seconds), for a video cut into moments; null: the whole video
    ("window_start", pa.float64()), ("window_end", pa.float64()),
])
REMOVED_SCHEMA = pa.schema([("id", pa.string()), ("split", pa.string())])
RETIRED_SCHEMA = pa.schema([("shard", pa.string()), ("retired_at", pa.timestamp("s", tz="UTC"))])
SAMPLE_FILTER = "error = ''"           # a Lance filter: rows that are samples, not failures
VERSIONS_KEPT = dt.timedelta(days=7)   # old versions of the sample table, for readers pinned to one
# Why an input gave no sample. The transient ones are worth another try (`--retry-failed`); the others are
# the input's own fault and come back the same.
STAGES = {"source": "the input row itself (no captions, unknown split, repeated id)",
          "input": "the file: missing, empty, a folder",
          "read": "reading it failed after retries (network, object store)",
          "timeout": "ffmpeg ran longer than --timeout",
          "worker": "the process decoding it died (out of memory, crash)",
          "spool": "it would not fit the local disk a decode task may use (--spool-gb) or the node's free disk",
          "decode": "ffmpeg cannot give frames (not a video, corrupt, truncated)",
          "encode": "making the JPEGs or the tar failed",
          "compacted": "it had left the inputs and its bytes were compacted away (it came back since)"}
TRANSIENT_STAGES = ("read", "timeout", "worker", "spool", "compacted")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_KEY_CHARS = 80  # keeps every member name under the 100 bytes of a plain ustar header


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def shard_number(shard: str) -> int:
    return int(shard_base(shard).removesuffix(".tar").rsplit("-", 1)[1])


def shard_base(shard: str) -> str:
    """The name a shard was planned under, whatever generation of it holds its rows now."""
    stem, generation = _generation(shard)
    return f"{stem}.tar" if generation else shard


def next_generation(shard: str) -> str:
    """The name of the shard written again: train-000007.tar -> train-000007.g1.tar -> .g2.tar."""
    stem, generation = _generation(shard)
    return f"{stem}.g{generation + 1}.tar"


def _generation(shard: str) -> tuple[str, int]:
    stem = shard.removesuffix(".tar")
    head, dot, tail = stem.rpartition(".g")
    return (head, int(tail)) if dot and tail.isdigit() else (stem, 0)


def plan_name(number: int) -> str:
    return f"plan-{number:06d}.parquet"


def frame_member(position: int) -> str:
    return f"{position:03d}.jpg"


def sample_key(video_id: str) -> str:
    """The WebDataset key of a video: its id when that is already safe (letters, digits, _ and -), else
    the id with every other character (dots included) made "_" plus a hash of the id, so keys stay unique."""
    safe = _UNSAFE.sub("_", video_id)[:_KEY_CHARS]
    if safe == video_id:
        return safe
    return f"{safe}_{hashlib.sha1(video_id.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def split_filter(split: str) -> str:
    """A Lance filter: the samples of `split`."""
    return f"split = {sql_text(split)} AND {SAMPLE_FILTER}"


def window_key(video_id: str, start: float) -> str:
    """The WebDataset key of one window of a video."""
    return sample_key(f"{video_id}@{start:.3f}")


def sample_names(ids: pa.Array, window_starts: pa.Array | None) -> pa.Array:
    """What tells samples apart across the sample table and the index: a whole video's id, or for a window
    the id, "@" and the window's start (the same text on both sides, whatever the float)."""
    if window_starts is None:
        return ids
    starts = pc.cast(pc.round(window_starts, 3), pa.string())
    return pc.coalesce(pc.binary_join_element_wise(ids, starts, "@"), ids)


def upgrade_samples(folder: Location) -> None:
    """Give a sample table written before windows existed their columns (null: whole videos), before any shard
    task appends rows of today's schema; a metadata-only change."""
    ds = sample_table(folder)
    if ds is not None and (missing := [f for f in SAMPLE_SCHEMA if f.name not in ds.schema.names]):
        ds.add_columns(missing)


def sample_table(folder: Location):
    """The folder's sample table (a Lance dataset), or None when no shard was ever finished in it."""
    loc = folder.child(SAMPLES)
    if not retrying(loc.child("_versions").exists):
        return None
    return retrying(lambda: lance.dataset(loc.uri, storage_options=lance_options(loc.uri)))


def write_sample_rows(folder: Location, rows: pa.Table) -> list[str]:
    """Write a finished shard's rows as data files of the sample table, not yet committed; returns their
    fragment descriptions (JSON, a few hundred bytes) for `commit_samples`."""
    loc = folder.child(SAMPLES)
    written = write_fragments(rows, loc.uri, schema=SAMPLE_SCHEMA, storage_options=lance_options(loc.uri))
    return [json.dumps(f.to_json()) for f in written]


def commit_samples(folder: Location, fragments: list[str]) -> None:
    """Add the rows of `write_sample_rows` to the table in one commit (a new version; the first creates it)."""
    if not fragments:
        return
    loc = folder.child(SAMPLES)
    written = [FragmentMetadata.from_json(f) for f in fragments]
    ds = sample_table(folder)
    op = LanceOperation.Append(written) if ds is not None else LanceOperation.Overwrite(SAMPLE_SCHEMA, written)
    lance.LanceDataset.commit(loc.uri, op, read_version=ds.version if ds is not None else None,
                              storage_options=lance_options(loc.uri))


def compact_samples(folder: Location, older_than: dt.timedelta | None = VERSIONS_KEPT) -> None:
    """Merge the table's small fragments (one per shard) into large ones and delete versions older than
    `older_than` (None: none), so that a table of years of runs stays a few files that readers scan quickly."""
    ds = sample_table(folder)
    if ds is not None:
        ds.optimize.compact_files()
        if older_than is not None:
            ds.cleanup_old_versions(older_than=older_than)


class FolderBusy(Busy):
    """Another run writes this shard folder."""


def folder_lease(folder: Location, run_id: str, what: str) -> Lease:
    """The folder's writer lease for a run of kind `what` ("preprocess run"): preprocessing and compaction
    hold it from before they touch anything until they end."""
    loc = folder.child(LEASE)
    return Lease(loc.uri, lance_options(loc.uri), run_id, folder.uri, what, "this shard folder", FolderBusy)


def legacy_catalogs(folder: Location) -> list[Location]:
    """The per-shard catalogs of a folder written before the sample table ([] for a current one)."""
    return [loc for loc in retrying(lambda: folder.child(CATALOG_DIR).list("*.json")) if loc.name != OPTIONS]


def read_removed(folder: Location) -> pa.Table:
    """(id, split) of the videos that left the folder's inputs."""
    return read_small_table(folder.child(REMOVED), REMOVED_SCHEMA)


def read_retired(folder: Location) -> pa.Table:
    """(shard, retired_at) of the tars that a compaction replaced and no row names any more."""
    return read_small_table(folder.child(RETIRED), RETIRED_SCHEMA)


def read_small_table(loc: Location, schema: pa.Schema) -> pa.Table:
    """One of the folder's small Parquet tables, read whole (empty when it was never written)."""
    if not retrying(loc.exists):
        return schema.empty_table()
    return pq.read_table(pa.BufferReader(retrying(loc.read_bytes)), schema=schema)


def write_small_table(loc: Location, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    loc.write_atomic(sink.getvalue().to_pybytes())
