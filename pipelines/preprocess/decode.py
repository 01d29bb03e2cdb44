"""Decode one video into the frames the model sees, the cheaper of two ways, the same frames either way.

Seeking to each sampled frame (`seek`, in-process) costs about a group of pictures per kept frame; decoding
sequentially (`sequential`, one ffmpeg process) costs every frame of the video. Both costs are estimated from
the stream's index and the cheaper way taken. Streams that cannot be trusted to seek (no index, a damaged
file, timestamps that do not add up, a picture turned by an odd angle) and any seek that does not reach its
frame are decoded sequentially, which also gives the failure messages for videos that cannot be decoded.
An object-store video is read in ranges through a seekable file when seeking, and downloaded to the local
spool (removed afterwards) only when decoded sequentially, within the local disk a task may use.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace

import pyarrow as pa

from pipelines.preprocess.sampling import DecodedVideo, DecodeError, Segmenting
from pipelines.preprocess.seek import Untrusted, decode_seeking, open_container, probe, slots, worth_seeking
from pipelines.preprocess.sequential import decode_sequential
from pipelines.storage.location import Location, SpoolFull

METHODS = ("auto", "seek", "sequential")
WHOLE_READ_MAX = 32 << 20     # bytes: an object-store video this small is read in one request, then sought in


def decode_windows(source: str | Location, *, frames: int, fps: float, resolution: int, timeout: float,
                   segmenting: Segmenting | None = None, method: str = "auto", spool_limit: int | None = None
                   ) -> Iterator[DecodedVideo]:
    """Sampled frames of the video at `source` (a path, URI or `Location`), a `DecodedVideo` per window (the
    whole video is one without `segmenting`), or `DecodeError` saying why there are none. `method` forces one
    way ("seek" fails with `DecodeError` where seeking cannot be trusted). A download for the sequential way
    that would pass `spool_limit` bytes of local disk is a `DecodeError` of stage "spool"."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    loc = source if isinstance(source, Location) else Location.of(source)
    ends = time.monotonic() + timeout        # one time limit for the video, whichever ways it takes
    given = 0
    if method != "sequential":
        try:
            for window in _seeking(loc, frames, fps, resolution, timeout, segmenting, always=method == "seek"):
                given += 1
                yield window
            if given:
                return
        except Untrusted as e:
            if method == "seek":
                raise DecodeError(f"cannot be sampled by seeking: {e}") from e
    with contextlib.ExitStack() as stack:   # the windows seeking gave already are not given again
        try:
            path = stack.enter_context(loc.local_file(spool_limit))
        except SpoolFull as e:
            raise DecodeError(str(e), stage="spool") from None
        size = os.path.getsize(path)
        left = ends - time.monotonic()
        if left <= 0:
            raise DecodeError(f"decoding took longer than {timeout:g} s", stage="timeout")
        for n, window in enumerate(decode_sequential(path, frames=frames, fps=fps, resolution=resolution,
                                                     timeout=left, segmenting=segmenting)):
            if n >= given:
                yield replace(window, read_bytes=size)


def decode_video(source: str | Location, *, frames: int, fps: float, resolution: int, timeout: float,
                 method: str = "auto") -> DecodedVideo:
    """The whole video's sampled frames (`decode_windows` without segmenting)."""
    found = decode_windows(source, frames=frames, fps=fps, resolution=resolution, timeout=timeout, method=method)
    try:
        return next(found)
    finally:
        found.close()


def _seeking(loc: Location, frames: int, fps: float, resolution: int, timeout: float,
             segmenting: Segmenting | None, always: bool) -> Iterator[DecodedVideo]:
    """The windows by seeking; none where decoding every frame looks cheaper."""
    with _seekable(loc) as source:
        with open_container(source, source.size, timeout) as container:
            stream = probe(container)
            plan = slots(stream, frames, fps, segmenting)
            if not always and not worth_seeking(stream, plan):
                return
            for window in decode_seeking(container, stream, plan, resolution, timeout, segmenting):
                yield replace(window, read_bytes=source.read_bytes)


@contextlib.contextmanager
def _seekable(loc: Location):
    """The video as a seekable file that counts the bytes read from it: ranged requests on an object store,
    except for a small video, read whole in one request (its groups of pictures would cost a request each
    for little less than the whole file)."""
    with loc.open_ranged() as raw:
        if loc.is_local or raw.size() > WHOLE_READ_MAX:
            yield _CountingFile(raw)
        else:
            whole = raw.read()
            yield _CountingFile(pa.BufferReader(whole), fetched=len(whole))


class _CountingFile:
    """A seekable binary file that counts what is read through it (PyAV's reads go through `read`), or what
    was `fetched` to make it."""

    def __init__(self, raw, fetched: int | None = None):
        self.raw, self.size = raw, raw.size()
        self.read_bytes, self.counting = fetched or 0, fetched is None

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.read_bytes += len(data) * self.counting
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()
