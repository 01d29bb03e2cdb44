"""What the index's tables hold and how they are named: row schema, model rows, config keys, errors.

Shared by the store, the writer, the lease and search, so none of them imports another for these.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa

from pipelines.model.registry import ModelRef
from pipelines.shards.format import sql_text
from tempme.errors import UserError

VIDEOS, FAILURES, LEASE = "videos.lance", "failures.lance", "lease.lance"
# A Lance tag on the version readers search while a new model version is embedded, published and indexed:
# they keep the old model's complete, indexed rows (no filter, no scan) until the new ones are ready.
SERVING_TAG = "serving"
LIVE_KEY, PENDING_KEY = "tempme.model", "tempme.pending"   # table config: the live / the coming model version


class VideoIndexError(UserError):
    """An index location that cannot be used: nothing there, something else there, a damaged table."""


class IndexNotFound(VideoIndexError):
    pass


class LegacyIndex(VideoIndexError):
    pass


def model_rows(model: ModelRef) -> str:
    """A Lance filter matching the rows of this model version."""
    return f"model_name = {sql_text(model.name)} AND model_version = {sql_text(model.version)}"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def video_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("video_id", pa.string()),
        ("embedding", pa.list_(pa.float32(), dim)),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("model_uri", pa.string()),
        ("embedded_at", pa.timestamp("us", tz="UTC")),
        ("caption", pa.string()),
        ("thumb_shard", pa.string()),
        ("thumb_offset", pa.int64()),
        ("thumb_size", pa.int64()),
        *MOMENT_FIELDS,
    ])


# Added after the first indexes were written (`upgrade` gives an older table them, empty): the video's
# path or URI, and the window of a video cut into moments (seconds; null for a whole video).
MOMENT_FIELDS = [pa.field("source", pa.string()), pa.field("window_start", pa.float64()),
                 pa.field("window_end", pa.float64())]


def upgrade(ds) -> None:
    """Give an index table written before moments existed their columns (metadata only; null in old rows)."""
    if missing := [f for f in MOMENT_FIELDS if f.name not in ds.schema.names]:
        ds.add_columns(missing)


def live_model(ds) -> ModelRef | None:
    return ModelRef.from_json(ds.config().get(LIVE_KEY)) if ds is not None else None


def pending_model(ds) -> ModelRef | None:
    return ModelRef.from_json(ds.config().get(PENDING_KEY)) if ds is not None else None
