"""One video in, one WebDataset sample (or one failure) out: the per-video work the decoders run.

A sample leaves the decoder already laid out as tar bytes (header + data per member, 512-byte aligned), so
the shard writer only concatenates; `members` gives each member's (offset, size) inside that fragment.
"""
from __future__ import annotations

import functools
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pyarrow.fs import FileType

from pipelines.preprocess.decode import decode_windows
from pipelines.preprocess.sampling import DecodedVideo, DecodeError, Segmenting
from pipelines.preprocess.sources import VideoInput
from pipelines.shards.format import CORPUS, META_MEMBER, frame_member, sample_key, window_key
from pipelines.storage.location import Location, retrying

BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class DecodeSettings:
    frames: int
    fps: float
    resolution: int
    quality: int
    timeout: float
    segmenting: Segmenting | None = None   # cut corpus videos into windows (captioned splits stay whole)
    spool_bytes: int | None = None         # local disk a task may use for a download and its shard (None: any)


class StageError(Exception):
    """Why one input gave no sample, and at which stage (see `pipelines.shards.format.STAGES`)."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def make_sample(row: dict, settings: DecodeSettings) -> dict:
    """One input row (as `shard_tasks.sample_row` makes it) to its samples: one for a whole video, one per
    window of a segmented one, each as tar bytes. Never raises: whatever goes wrong becomes this row's failure
    (and no sample of it is kept)."""
    video = VideoInput(row["id"], row["uri"], tuple(row["captions"]), row["split"], row["origin"])
    out = {"shard": row["shard"], "pos": row["pos"], "id": video.id, "uri": video.uri, "split": video.split,
           "samples": [], "captions": 0, "method": "", "stage": "", "error": ""}
    samples, method = [], ""
    try:
        for decoded in _decode(video, settings):
            try:
                key, fragment, members = encode_sample(video, decoded, settings)
            except Exception as e:
                return {**out, "stage": "encode", "error": f"{type(e).__name__}: {e}"}
            start, end = decoded.window or (None, None)
            samples.append({"key": key, "fragment": fragment, "members": json.dumps(members),
                            "valid": len(decoded.frames), "window_start": start, "window_end": end})
            method = decoded.method
    except StageError as e:
        return {**out, "stage": e.stage, "error": str(e)}
    except Exception as e:  # unforeseen trouble with one input must not stop the job
        return {**out, "stage": "decode", "error": f"{type(e).__name__}: {e}"}
    return {**out, "samples": samples, "captions": len(video.captions), "method": method}


def _decode(video: VideoInput, settings: DecodeSettings) -> Iterator[DecodedVideo]:
    loc = Location.of(video.uri)
    try:
        info = retrying(loc.info)
    except Exception as e:
        raise StageError("read", f"cannot open: {type(e).__name__}: {e}") from e
    if info.type == FileType.NotFound:
        raise StageError("input", "missing file")
    if info.type == FileType.Directory:
        raise StageError("input", "a folder, not a video file")
    if info.size == 0:
        raise StageError("input", "empty file (0 bytes)")
    segmenting = settings.segmenting if video.split == CORPUS else None
    try:
        yield from decode_windows(loc, frames=settings.frames, fps=settings.fps, resolution=settings.resolution,
                                  timeout=settings.timeout, segmenting=segmenting, spool_limit=settings.spool_bytes)
    except DecodeError as e:
        raise StageError(e.stage, str(e)) from e
    except OSError as e:
        raise StageError("read", f"{type(e).__name__}: {e}") from e


def encode_sample(video: VideoInput, decoded: DecodedVideo, settings: DecodeSettings
                  ) -> tuple[str, bytes, dict[str, tuple[int, int]]]:
    """(key, tar fragment, {member suffix: (offset, size) in the fragment}) for one decoded video."""
    key = sample_key(video.id) if decoded.window is None else window_key(video.id, decoded.window[0])
    meta = {
        "id": video.id,
        "split": video.split,
        "source": video.uri,
        "captions": list(video.captions),
        "duration": round(decoded.duration, 3),
        "fps": decoded.info.fps,
        "width": decoded.info.width,
        "height": decoded.info.height,
        "codec": decoded.info.codec,
        "sample_fps": settings.fps,
        "frames": settings.frames,
        "valid": len(decoded.frames),
        "timestamps": list(decoded.timestamps),
        "resolution": settings.resolution,
        "decoder": decoded.method,
    }
    if decoded.window is not None:
        meta["window"] = list(decoded.window)
    members = [(META_MEMBER, json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
    members += [(frame_member(i), jpeg(frame, settings.quality)) for i, frame in enumerate(decoded.frames)]
    padding = black_jpeg(settings.resolution, settings.quality)
    members += [(frame_member(i), padding) for i in range(len(decoded.frames), settings.frames)]
    return (key, *tar_fragment(key, members))


def jpeg(frame: np.ndarray, quality: int) -> bytes:

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@functools.lru_cache(maxsize=4)
def black_jpeg(resolution: int, quality: int) -> bytes:
    """The padding frame: every sample stores `frames` JPEGs, so all samples have the same members (what
    tools that build a table per member, like ray.data.read_webdataset, need); the mask is in the JSON."""
    return jpeg(np.zeros((resolution, resolution, 3), np.uint8), quality)


def tar_fragment(key: str, members: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """Tar bytes of `key.suffix` members (fixed owner and time, so a redone shard is byte-identical)."""
    parts, offsets, position = [], {}, 0
    for suffix, data in members:
        info = tarfile.TarInfo(f"{key}.{suffix}")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        header = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
        padding = -len(data) % BLOCK
        parts += [header, data, b"\0" * padding]
        offsets[suffix] = (position + len(header), len(data))
        position += len(header) + len(data) + padding
    return b"".join(parts), offsets
