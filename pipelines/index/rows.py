"""What the index's tables hold and how they are named: row schema, model reference, config keys, errors.

Shared by the store, the writer, the lease and search, so none of them imports another for these.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os

import pyarrow as pa
from tempme.errors import UserError

VIDEOS, FAILURES, LEASE = "videos.lance", "failures.lance", "lease.lance"
LIVE_KEY, PENDING_KEY = "tempme.model", "tempme.pending"   # table config: the live / the coming model version


class VideoIndexError(UserError):
    """An index location that cannot be used: nothing there, something else there, a damaged table."""


class IndexNotFound(VideoIndexError):
    pass


class LegacyIndex(VideoIndexError):
    pass


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """The model version an index's vectors come from; `uri` resolves to exactly this version."""
    name: str
    version: str
    uri: str

    def same_version(self, other: ModelRef | None) -> bool:
        return other is not None and (self.name, self.version) == (other.name, other.version)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> ModelRef | None:
        return cls(**json.loads(text)) if text else None

    def row_filter(self) -> str:
        """A Lance filter matching this model version's rows."""
        return f"model_name = {sql_text(self.name)} AND model_version = {sql_text(self.version)}"


def sql_text(text: str) -> str:
    """`text` as a quoted literal of a Lance filter."""
    return "'" + text.replace("'", "''") + "'"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
    ])


def storage_options(uri: str) -> dict[str, str] | None:
    """Lance reads the standard AWS variables itself; a plain-HTTP endpoint (a test or on-premises store)
    must also be allowed explicitly."""
    if "://" in uri and os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        return {"allow_http": "true"}
    return None


def live_model(ds) -> ModelRef | None:
    return ModelRef.from_json(ds.config().get(LIVE_KEY)) if ds is not None else None


def pending_model(ds) -> ModelRef | None:
    return ModelRef.from_json(ds.config().get(PENDING_KEY)) if ds is not None else None
