"""Names of everything in a shard folder, shared by the writer (preprocess) and the reader (pipelines.shards).

    OUT/train-000000.tar            shards; videos of a split sorted by id, `samples_per_shard` per shard
    OUT/_summary.json               samples, shards, bytes, frames, failures per split
    OUT/_failures.csv               the failure table: input, id, split, stage, error
    OUT/_index/train-000000.json    per shard: byte range of every member of every sample, and the shard's
                                    failures; written after the shard, so it marks the shard finished
    OUT/_index/options.json         the options that shaped the shards, checked when a job resumes
    OUT/_plans/plan-000000.parquet  which video goes into which shard, one file per run that added shards,
                                    written before its shards (the ledger of the append-only folder)
    OUT/_removed.parquet            ids (and splits) of videos that left the inputs: readers skip them

Names starting with "_" or "." (the catalog, the summary, unfinished files) are skipped by
`ray.data.read_webdataset(OUT)`, so the folder reads as the shards alone.
"""
from __future__ import annotations

import hashlib
import re

FORMAT = "tempme-shards/1"
SUMMARY = "_summary.json"
FAILURES = "_failures.csv"
CATALOG_DIR = "_index"   # the shards' catalogs (the folder keeps its first name: corpora already written read on)
OPTIONS = "options.json"
PLANS_DIR = "_plans"
REMOVED = "_removed.parquet"
META_MEMBER = "json"
FAILURE_COLUMNS = ("input", "id", "split", "stage", "error")
# Why an input gave no sample. The transient ones are worth another try (`--retry-failed`); the others are
# the input's own fault and come back the same.
STAGES = {"source": "the input row itself (no captions, unknown split, repeated id)",
          "input": "the file: missing, empty, a folder",
          "read": "reading it failed after retries (network, object store)",
          "timeout": "ffmpeg ran longer than --timeout",
          "worker": "the process decoding it died (out of memory, crash)",
          "decode": "ffmpeg cannot give frames (not a video, corrupt, truncated)",
          "encode": "making the JPEGs or the tar failed"}
TRANSIENT_STAGES = ("read", "timeout", "worker")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_KEY_CHARS = 80  # keeps every member name under the 100 bytes of a plain ustar header


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def catalog_name(shard: str) -> str:
    return shard.removesuffix(".tar") + ".json"


def shard_number(shard: str) -> int:
    return int(shard.removesuffix(".tar").rsplit("-", 1)[1])


def plan_name(number: int) -> str:
    return f"plan-{number:06d}.parquet"


def catalog_pattern(split: str) -> str:
    return f"{split}-*.json"


def frame_member(position: int) -> str:
    return f"{position:03d}.jpg"


def sample_key(video_id: str) -> str:
    """The WebDataset key of a video: its id when that is already safe (letters, digits, _ and -), else
    the id with every other character (dots included) made "_" plus a hash of the id, so keys stay unique."""
    safe = _UNSAFE.sub("_", video_id)[:_KEY_CHARS]
    if safe == video_id:
        return safe
    return f"{safe}_{hashlib.sha1(video_id.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"
