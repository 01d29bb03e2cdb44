"""The corpus index: every video's embedding in one versioned Lance table, and search over it.

Layout of an index at ROOT (a local folder or an object-store URI such as s3://bucket/index):

    videos.lance     one row per video: video_id, embedding (float32 x dim), model_name, model_version,
                     model_uri, embedded_at, caption (the first), thumb_shard/thumb_offset/thumb_size (where
                     a frame's JPEG lies in its shard). Table config: tempme.model (the live model version,
                     JSON) and, while a new version is being embedded, tempme.pending.
    failures.lance   samples a run could not embed, and why (video_id, error, source, run_id, ...)
    lease.lance      one row: which run may write, until when (the writers' lease)

Why this shape: Lance commits every change as a new table version with a conditional write, on a local disk
and on S3 alike, so a reader pinned to a version sees exactly that version and a killed writer leaves the
last committed one. Embedding workers write data files themselves; the job commits their fragments as they
come, so a killed run keeps what it committed. A new model version's rows are added beside the live ones
(readers keep filtering on the live version), and one config commit then makes the new version live.
The lease is a row updated under a condition (a compare-and-swap that Lance's commit conflict detection
makes atomic), so two runs against one index never write at once: the second stops with a message.
"""
import os

os.environ.setdefault("LANCE_LOG", "error")   # Lance's warnings (dataset created, ...) are not the user's

from pipelines.index.lease import IndexBusy, WriterLease  # noqa: E402
from pipelines.index.rows import IndexNotFound, LegacyIndex, ModelRef, VideoIndexError  # noqa: E402
from pipelines.index.search import Hit, VideoIndex, refresh_ann  # noqa: E402
from pipelines.index.table import IndexStore  # noqa: E402
from pipelines.index.writer import IndexWriter, write_fragment  # noqa: E402

__all__ = ["Hit", "IndexBusy", "IndexNotFound", "IndexStore", "IndexWriter", "LegacyIndex", "ModelRef",
           "VideoIndex", "VideoIndexError", "WriterLease", "refresh_ann", "write_fragment"]
