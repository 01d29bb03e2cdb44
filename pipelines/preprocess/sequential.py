"""Decode a whole video sequentially with one ffmpeg process (built with ffmpeg-python), keeping the sampled
frames (`sampling`): the reference way, and the way for short clips and streams that cannot be trusted to seek.

Everything heavy happens inside ffmpeg, on one thread per decoder (parallelism comes from running several
decoders): the `fps` filter drops frames before anything else touches them, the short side is scaled to
`resolution` with bicubic interpolation and the centre `resolution` x `resolution` is cropped, and only
those frames leave ffmpeg, as raw RGB through a pipe. Nothing is decoded twice or kept at full size.

Stream facts (container duration, frame rate, size, codec) come from ffmpeg's own log of the input, since
imageio-ffmpeg ships no ffprobe. Memory is bounded whatever the video's length or size: frames are read
from the pipe one at a time and only those that may be picked are kept (`FrameKeeper`), and ffmpeg itself
holds a few frames of the source's size.
"""
from __future__ import annotations

import collections
import re
import threading
from collections.abc import Iterator

import ffmpeg
import numpy as np

from pipelines.preprocess.media import ffmpeg_exe
from pipelines.preprocess.sampling import (
    DecodedVideo,
    DecodeError,
    Segmenting,
    StreamInfo,
    sample_indices,
    window_times,
)

IMAGE_DEMUXERS = re.compile(r"^(image2|\w+_pipe)$")          # a still picture, not a video
MAX_BUFFERED = 64   # frames kept besides the likely picks (see FrameKeeper): 9.6 MB at 224 x 224
LOG_LINES = 500     # of ffmpeg's log kept from its head and from its tail
CORRUPTION = re.compile(r"partial file|ended prematurely|corrupt|Invalid NAL|error while decoding", re.I)


def decode_sequential(path: str, *, frames: int, fps: float, resolution: int, timeout: float,
                      segmenting: Segmenting | None = None, max_buffered: int | None = MAX_BUFFERED
                      ) -> Iterator[DecodedVideo]:
    """Sampled frames of the local video file `path`, a `DecodedVideo` per window as each one ends (the whole
    video is one window without `segmenting`), or `DecodeError` saying why there are none.

    ffmpeg's frames are read one at a time as they come; only those that can still be picked are kept (see
    `FrameKeeper`), so memory does not grow with the video's length. `max_buffered=None` keeps every frame
    (the reference the bounded path is tested against)."""
    graph = (
        ffmpeg.input(f"file:{path}", threads=1)["V:0"]      # first real video stream (not cover art)
        .filter("fps", fps=fps, eof_action="pass")          # 'pass' keeps a frame of sub-second videos
        .filter("scale", resolution, resolution, force_original_aspect_ratio="increase", flags="bicubic")
        .filter("crop", resolution, resolution)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .global_args("-hide_banner", "-nostats", "-nostdin", "-filter_complex_threads", "1")
    )
    process = ffmpeg.run_async(graph, cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
    log = _LogReader(process.stderr)
    timed_out = threading.Event()
    timer = threading.Timer(timeout, lambda: (timed_out.set(), process.kill()))
    timer.start()
    try:
        log.header.wait(timeout)
        info = parse_stream_info(log.text())
        expected = round(info.duration * fps) if info.duration else None
        keepers = _WindowKeepers(frames, fps, segmenting, expected, max_buffered)
        frame_bytes = resolution * resolution * 3
        while chunk := process.stdout.read(frame_bytes):
            if len(chunk) < frame_bytes:
                break
            for start, keeper in keepers.offer(np.frombuffer(chunk, np.uint8).reshape(resolution, resolution, 3)):
                yield _window(start, keeper, fps, info, info.duration or 0.0, segmenting)
        process.wait()
        log.done.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if timed_out.is_set():
        raise DecodeError(f"ffmpeg took longer than {timeout:g} s", stage="timeout")
    text = log.text()
    info = parse_stream_info(text)
    if process.returncode != 0:
        raise DecodeError(_failure_reason(text, info, process.returncode))
    if IMAGE_DEMUXERS.match(info.demuxer):
        raise DecodeError(f"a still image ({info.codec} picture), not a video")
    available = keepers.slot
    if available == 0:
        raise DecodeError("no frames could be decoded")
    decoded_seconds = available / fps
    if info.duration and decoded_seconds < 0.9 * info.duration - 1.0 and CORRUPTION.search(text):
        raise DecodeError(f"truncated or corrupt: frames stop at {decoded_seconds:.1f} s of the "
                          f"{info.duration:.1f} s the container declares")
    for start, keeper in keepers.finish():
        yield _window(start, keeper, fps, info, info.duration or decoded_seconds, segmenting)


def _window(start: int, keeper: FrameKeeper, fps: float, info: StreamInfo, duration: float,
            segmenting: Segmenting | None) -> DecodedVideo:
    picks, kept = keeper.pick()
    return DecodedVideo(
        frames=kept,
        timestamps=tuple(round((start + i) / fps, 3) for i in picks),
        available=keeper.available,
        duration=duration,
        info=info,
        window=window_times(start, keeper.available, fps, duration) if segmenting else None,
    )


class _WindowKeepers:
    """A `FrameKeeper` for each window open at the current frame: a window opens every `step` frames and ends
    after `length` (one window, never ending early, without segmenting)."""

    def __init__(self, frames: int, fps: float, segmenting: Segmenting | None, expected: int | None,
                 max_buffered: int | None):
        self.frames, self.expected, self.max_buffered = frames, expected, max_buffered
        self.length, self.step = segmenting.slots(fps) if segmenting else (None, None)
        self.open: dict[int, FrameKeeper] = {}
        self.slot = 0

    def offer(self, frame: np.ndarray) -> list[tuple[int, FrameKeeper]]:
        """Give the next frame to the open windows; returns the windows it ended, (first slot, keeper)."""
        if self.slot == 0 or (self.step and self.slot % self.step == 0):
            left = self.expected - self.slot if self.expected is not None else None
            count = left if self.length is None else min(self.length, left) if left is not None else None
            self.open[self.slot] = FrameKeeper(self.frames, count, self.max_buffered, full=self.length)
        for keeper in self.open.values():
            keeper.offer(frame)
        self.slot += 1
        ended = [(start, k) for start, k in self.open.items() if self.length and k.available == self.length]
        for start, _ in ended:
            del self.open[start]
        return ended

    def finish(self) -> list[tuple[int, FrameKeeper]]:
        """The windows still open at the end of the video, less those holding nothing an earlier one did not."""
        overlap = self.length - self.step if self.length else 0
        return [(start, k) for start, k in self.open.items() if start == 0 or k.available > overlap]


class FrameKeeper:
    """Keeps, of a stream of frames whose final count is not known yet, enough to pick `frames` of them.

    The picks (`sample_indices`) depend on the final count L. The container's duration predicts L to within a
    frame or two, so every index that some L near the prediction would pick is kept exactly; besides those, a
    grid of every `stride`-th frame is kept, the stride doubling whenever the grid outgrows `max_buffered`.
    Short videos (L <= max_buffered) are therefore always exact, long ones exact whenever the duration is
    right, and otherwise each pick falls on the nearest kept frame. Memory: at most
    (2 * WINDOW + 1) * frames + max_buffered frames, whatever the video's length."""

    WINDOW = 3

    def __init__(self, frames: int, expected: int | None, max_buffered: int | None, full: int | None = None):
        self.frames, self.max_buffered = frames, max_buffered
        self.wanted: set[int] = set()
        if max_buffered is not None:
            if expected is not None:
                for count in range(max(1, expected - self.WINDOW), expected + self.WINDOW + 1):
                    self.wanted.update(sample_indices(count, frames))
            if full is not None:     # a window's count unless the video ends inside it
                self.wanted.update(sample_indices(full, frames))
        self.stride, self.available = 1, 0
        self.kept: dict[int, np.ndarray] = {}

    def offer(self, frame: np.ndarray) -> None:
        i, self.available = self.available, self.available + 1
        if i in self.wanted or i % self.stride == 0:
            self.kept[i] = frame.copy()
        if self.max_buffered is not None and len(self.kept) - len(self.wanted) > self.max_buffered:
            self.stride *= 2
            self.kept = {k: f for k, f in self.kept.items() if k in self.wanted or k % self.stride == 0}

    def pick(self) -> tuple[list[int], np.ndarray]:
        """(indices picked for the final count, their frames as uint8 [n, H, W, 3])."""
        picks = sample_indices(self.available, self.frames)
        ordered = sorted(self.kept)
        chosen = [i if i in self.kept else min(ordered, key=lambda k: abs(k - i)) for i in picks]
        return picks, np.stack([self.kept[i] for i in chosen])


class _LogReader:
    """Drains ffmpeg's stderr on a thread (a full pipe would stall ffmpeg); `header` is set once ffmpeg has
    described its input and output (before the first frame), `done` at the end of the log. Keeps the log's
    head (the stream facts) and its tail (the last errors), however much a broken file makes ffmpeg say."""

    def __init__(self, stream):
        self.head: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.header, self.done = threading.Event(), threading.Event()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace")
                (self.head if len(self.head) < LOG_LINES else self.tail).append(line)
                if line.startswith(("Stream mapping:", "Output #0")):
                    self.header.set()
        finally:
            self.header.set()
            self.done.set()

    def text(self) -> str:
        return "".join(self.head) + "".join(self.tail)


def parse_stream_info(log: str) -> StreamInfo:
    """Facts about input #0 and its first video stream, from ffmpeg's log (missing facts stay empty)."""
    demuxer = _search(r"^Input #0, (.*?), from ", log) or ""
    duration = None
    if m := re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", log):
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    codec, width, height, fps = "", 0, 0, None
    for line in log.splitlines():
        if re.match(r"\s*Stream #0:\d+.*?: Video: ", line) and "(attached pic)" not in line:
            codec = _search(r"Video: (\w+)", line) or ""
            if size := re.search(r", (\d{1,5})x(\d{1,5})\b", line):
                width, height = int(size[1]), int(size[2])
            rate = _search(r", ([\d.]+) fps", line) or _search(r", ([\d.]+)k? tbr", line)
            fps = float(rate) if rate else None
            break
    return StreamInfo(demuxer, codec, width, height, fps, duration)


def _failure_reason(log: str, info: StreamInfo, returncode: int) -> str:
    if info.demuxer and not info.codec:
        return "no video stream (audio or data only)"
    if "moov atom not found" in log:
        return "unreadable MP4: no moov atom (truncated, unfinished, or not an MP4 at all)"
    if "Invalid data found when processing input" in log:
        return "not a readable video (ffmpeg: invalid data found when processing input)"
    errors = [line.strip() for line in log.splitlines() if "rror" in line]
    return f"ffmpeg failed (exit {returncode}): {(errors or log.splitlines() or ['no message'])[-1][:300]}"


def _search(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, re.M)
    return m[1] if m else None
