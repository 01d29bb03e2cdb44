"""Names of everything in a shard folder, shared by the writer (preprocess) and the reader (pipelines.shards).

    OUT/train-000000.tar            shards; videos of a split sorted by id, `samples_per_shard` per shard
    OUT/_summary.json               samples, shards, bytes, frames, failures per split
    OUT/_failures.csv               the failure table: input, id, split, stage, error
    OUT/_index/train-000000.json    per shard: byte range of every member of every sample, and the shard's
                                    failures; written after the shard, so it marks the shard finished
    OUT/_index/options.json         the options that shaped the shards, checked when a job resumes

Names starting with "_" or "." (the index, the summary, unfinished files) are skipped by
`ray.data.read_webdataset(OUT)`, so the folder reads as the shards alone.
"""
from __future__ import annotations

import hashlib
import re

FORMAT = "tempme-shards/1"
SUMMARY = "_summary.json"
FAILURES = "_failures.csv"
INDEX_DIR = "_index"
OPTIONS = "options.json"
META_MEMBER = "json"
FAILURE_COLUMNS = ("input", "id", "split", "stage", "error")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_KEY_CHARS = 80  # keeps every member name under the 100 bytes of a plain ustar header


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def index_name(shard: str) -> str:
    return shard.removesuffix(".tar") + ".json"


def index_pattern(split: str) -> str:
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
