"""Decode only the sampled frames of a video: seek to each, decode from the keyframe before it, in-process.

The frames are exactly those of the sequential path (`decode.decode_sequential`): ffmpeg's `fps` filter
gives output slot n (of 1/fps) the last frame whose timestamp, in units of 1/fps and rounded to the
nearest (halves away from zero), is at most n; slots run from the first frame's slot to the end of the last
frame rounded up (`eof_action=pass`); timestamps count from the container's start. So a slot needs no list of
every frame's timestamp: it is the last frame before the slot's boundary, found by seeking to the keyframe
before the boundary and decoding forward to it. Only the first and the last group of pictures are demuxed
to place the slots (where the stream starts and ends), and only the picks are scaled and cropped, by the
same filters as the sequential path, rotation included.

PyAV (libav* in its wheels) does the demuxing and decoding on one thread, from a seekable file-like object
(on an object store, ranged reads around the picks). `probe` says whether a video can be trusted to seek
(`Untrusted` says why not), `slots` which frames each window keeps, `costs` what each way would decode.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter
import numpy as np

from pipelines.preprocess.sampling import (
    DecodedVideo,
    DecodeError,
    Segmenting,
    StreamInfo,
    sample_indices,
    window_times,
    windows,
)

SEEKABLE_FORMATS = ("mov", "mp4", "matroska", "webm")   # containers whose index seeking uses
HEAD_PACKETS = 64          # packets read at the start to find the first frame's timestamp
SEEK_COST_FRAMES = 4       # a seek and a decoder flush, in decoded frames
SEEK_ADVANTAGE = 1.25      # seeking must look this much cheaper: the estimate is rough, sequential is safe
RETREATS_S = (0, 1, 2, 4)   # seconds before a slot's boundary seeks aim at, until one lands before the frame
READ_SHARE = 128           # a read of the source (a ranged request on an object store) is this share of it,
READ_LIMITS = (32 << 10, 1 << 20)   # within these bytes: about a group of pictures of common encodes


class Untrusted(Exception):
    """This stream cannot be sampled by seeking; the message says why (the job decodes it sequentially)."""


@dataclass(frozen=True)
class Stream:
    """What seeking needs of a video stream, its timestamps in `time_base` counted from the container start."""
    info: StreamInfo
    time_base: Fraction
    offset: int                 # added to a packet's pts to count from the container's start (as ffmpeg does)
    first: int                  # the first frame's timestamp
    end: int                    # the end of the last frame
    keyframes: tuple[int, ...]  # keyframe timestamps from the container's index (decode time; may be empty)
    frames: int                 # frames in the stream (declared, else estimated from its rate)
    rotation: int               # degrees counter-clockwise the picture is shown turned (0, 90, 180, 270)


@dataclass(frozen=True)
class Slots:
    """The fps filter's output slots of one stream, its windows, and which slots each window keeps."""
    fps: Fraction
    first: int                  # slot of the first frame
    available: int              # slots in all
    windows: tuple[tuple[int, int, tuple[int, ...]], ...]   # (first slot, slots, kept slots) per window

    def picks(self) -> list[int]:
        """Every kept slot, in order."""
        return sorted({p for _, _, kept in self.windows for p in kept})


def open_container(source, size: int, timeout: float):
    """A PyAV input container on a seekable file-like object of `size` bytes, decoding on one thread."""
    low, high = READ_LIMITS
    try:
        container = av.open(source, buffer_size=min(max(size // READ_SHARE, low), high), timeout=timeout)
    except av.FFmpegError as e:
        raise Untrusted(f"cannot open with PyAV: {e}") from e
    if not container.streams.video:
        container.close()
        raise Untrusted("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    stream.codec_context.thread_count = 1
    return container


def probe(container) -> Stream:
    """The facts seeking needs, from the container's header, its first packets and its last group of pictures;
    `Untrusted` when a fact is missing or the stream looks damaged."""
    if not any(name in SEEKABLE_FORMATS for name in container.format.name.split(",")):
        raise Untrusted(f"{container.format.name} has no index to seek by")
    video = container.streams.video[0]
    if video.time_base is None:
        raise Untrusted("no time base")
    tb = Fraction(video.time_base)
    offset = -round(Fraction(container.start_time or 0, 1_000_000) / tb)
    try:
        first = _first_timestamp(container, video) + offset
        end = _end_timestamp(container, video) + offset
    except av.FFmpegError as e:
        raise Untrusted(f"damaged: {e}") from e
    declared = container.duration / 1_000_000 if container.duration else None
    seconds = float((end - first) * tb)
    if seconds <= 0:
        raise Untrusted("no frames")
    if declared and abs(seconds - declared) > max(1.0, 0.02 * declared):
        raise Untrusted(f"frames span {seconds:.1f} s of the {declared:.1f} s the container declares")
    keyframes = tuple(sorted(e.timestamp + offset for e in video.index_entries if e.is_keyframe))
    rate = video.average_rate or video.guessed_rate
    frames = video.frames or round(seconds * float(rate or 30))
    rotation = _rotation(container, video)
    info = StreamInfo(demuxer=container.format.name, codec=video.codec_context.name,
                      width=video.codec_context.width, height=video.codec_context.height,
                      fps=float(rate) if rate else None, duration=declared)
    return Stream(info, tb, offset, first, end, keyframes, frames, rotation)


def slots(stream: Stream, frames: int, fps: float, segmenting: Segmenting | None = None) -> Slots:
    """The sequential path's slots, windows and picks, computed from where the stream starts and ends."""
    rate = Fraction(fps).limit_denominator(1_000_000)
    first = _round_half_away(stream.first * stream.time_base * rate)
    last = math.ceil(stream.end * stream.time_base * rate)   # eof_action=pass rounds the end up
    available = max(last - first, 1)
    cut = windows(available, fps, segmenting)
    return Slots(rate, first, available,
                 tuple((start, count, tuple(start + i for i in sample_indices(count, frames)))
                       for start, count in cut))


def costs(stream: Stream, plan: Slots) -> tuple[float, float]:
    """(frames decoded seeking, frames decoded sequentially), estimated from the keyframe index."""
    per_tick = stream.frames / max(stream.end - stream.first, 1)
    keys = np.array(stream.keyframes or (stream.first,))
    seeking, position = 0.0, None
    for pick in plan.picks():
        target = _boundary(stream, plan, plan.first + pick)
        key = keys[max(np.searchsorted(keys, target, side="right") - 1, 0)]
        if position is not None and key <= position <= target:   # decoding on is cheaper than seeking back
            seeking += (target - position) * per_tick
        else:
            seeking += (target - key) * per_tick + SEEK_COST_FRAMES
        position = target
    return seeking, float(stream.frames)


def worth_seeking(stream: Stream, plan: Slots) -> bool:
    seeking, sequential = costs(stream, plan)
    return seeking * SEEK_ADVANTAGE < sequential


def decode_seeking(container, stream: Stream, plan: Slots, resolution: int, timeout: float,
                   segmenting: Segmenting | None = None) -> Iterator[DecodedVideo]:
    """The kept slots' frames, scaled and cropped as the sequential path does, a `DecodedVideo` per window;
    `Untrusted` if a seek cannot reach a slot's frame (the caller decodes sequentially), `DecodeError` on a
    time limit. Frames of slots that overlapping windows share are decoded once."""
    deadline = _Deadline(timeout)
    video = container.streams.video[0]
    scaler = _Scaler(video, resolution, stream.rotation)
    fps, duration = float(plan.fps), stream.info.duration or float((stream.end - stream.first) * stream.time_base)
    decoder, position = None, None   # position: timestamp of the last frame decoded, while decoding on
    done: dict[int, np.ndarray] = {}
    for n, (start, count, kept) in enumerate(plan.windows):
        for pick in kept:
            if pick in done:
                continue
            boundary = _boundary(stream, plan, plan.first + pick)
            try:
                if position is None or not _can_decode_on(stream, position, boundary):
                    decoder, position = _seek_before(container, video, stream, boundary, deadline), None
                frame, position, decoder = _last_before(decoder, stream, boundary, deadline)
            except av.FFmpegError as e:
                raise Untrusted(f"damaged: {e}") from e
            done[pick] = scaler(frame)
        yield DecodedVideo(
            frames=np.stack([done[p] for p in kept]),
            timestamps=tuple(round(p / fps, 3) for p in kept),
            available=count,
            duration=duration,
            info=stream.info,
            method="seek",
            window=window_times(start, count, fps, duration) if segmenting else None,
        )
        later = plan.windows[n + 1][0] if n + 1 < len(plan.windows) else plan.available
        done = {p: f for p, f in done.items() if p >= later}


def _first_timestamp(container, video) -> int:
    """The earliest presentation time of the first packets (frames a decoder shows, not an edit's preroll)."""
    seen = []
    for packet in container.demux(video):
        if packet.pts is not None and not packet.is_discard:
            seen.append(packet.pts)
        if len(seen) >= HEAD_PACKETS:
            break
    if not seen:
        raise Untrusted("no timestamps")
    return min(seen)


def _end_timestamp(container, video) -> int:
    """The end of the last frame: demux the last group of pictures (a seek to the end) to the file's end."""
    container.seek(2**62, backward=True, stream=video)
    ends = [p.pts + (p.duration or 0) for p in container.demux(video)
            if p.pts is not None and not p.is_discard]
    if not ends:
        raise Untrusted("no timestamps at the end")
    return max(ends)


def _rotation(container, video) -> int:
    """How the picture is shown turned (from the display matrix of its first frame), or `Untrusted`."""
    container.seek(0, backward=True, stream=video)
    for frame in container.decode(video):
        turn = round(frame.rotation or 0) % 360
        if turn % 90:
            raise Untrusted(f"shown turned by {turn} degrees")
        return turn
    raise Untrusted("no frame decodes")


def _round_half_away(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


def _boundary(stream: Stream, plan: Slots, slot: int) -> int:
    """The first timestamp that falls in a later slot than `slot` (frames before it may fill the slot)."""
    return math.ceil((slot + Fraction(1, 2)) / plan.fps / stream.time_base)


def _can_decode_on(stream: Stream, position: int, boundary: int) -> bool:
    """Whether the keyframe before `boundary` is not after `position`: decoding on reaches it sooner."""
    keys = stream.keyframes
    if not keys:
        return False
    i = np.searchsorted(keys, boundary, side="right") - 1
    return position < boundary and (i < 0 or keys[i] <= position)


def _seek_before(container, video, stream: Stream, boundary: int, deadline: _Deadline):
    """A frame iterator whose first frame is before `boundary`: a seek to the keyframe before it, and where the
    first frame shown comes later (an open group of pictures), seeks 1, 2 and 4 s further back."""
    second = round(1 / stream.time_base)
    for back in RETREATS_S:
        target = boundary - 1 - back * second
        container.seek(target - stream.offset, backward=True, stream=video)
        frames = container.decode(video)
        first = next(frames, None)
        deadline.check()
        if first is None or first.pts is None:
            raise Untrusted("no frame after a seek")
        if first.pts + stream.offset < boundary or target <= stream.first:
            return _prepend(first, frames)
    raise Untrusted("seeking lands after the frame wanted")


def _last_before(frames, stream: Stream, boundary: int, deadline: _Deadline):
    """(the last frame before `boundary`, its timestamp, the iterator left at the frame after it)."""
    chosen = None
    for frame in frames:
        if frame.pts is None:
            raise Untrusted("a frame without a timestamp")
        t = frame.pts + stream.offset
        if t >= boundary:
            if chosen is None:
                raise Untrusted("no frame before a slot's boundary")
            return chosen, chosen.pts + stream.offset, _prepend(frame, frames)
        chosen = frame
        deadline.check()
    if chosen is None:
        raise Untrusted("the stream ends before a slot")
    return chosen, chosen.pts + stream.offset, iter(())


def _prepend(first, rest):
    yield first
    yield from rest


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds, self.at = seconds, time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise DecodeError(f"seeking to the frames took longer than {self.seconds:g} s", stage="timeout")


class _Scaler:
    """The sequential path's filters on one frame: turned upright, short side scaled to `resolution`
    (bicubic), the centre square cropped, as RGB."""

    TURNS = {90: ("transpose", "cclock"), 270: ("transpose", "clock")}

    def __init__(self, video, resolution: int, rotation: int):
        self.video, self.resolution, self.rotation = video, resolution, rotation
        self.graph = None

    def __call__(self, frame) -> np.ndarray:
        if self.graph is None:
            self.graph = self._build(frame)
        self.graph.push(frame)
        return self.graph.pull().to_ndarray(format="rgb24")

    def _build(self, frame):
        graph = av.filter.Graph()
        chain = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                  time_base=self.video.time_base)]
        if self.rotation in self.TURNS:
            chain.append(graph.add(*self.TURNS[self.rotation]))
        elif self.rotation == 180:
            chain += [graph.add("hflip"), graph.add("vflip")]
        r = self.resolution
        chain += [graph.add("scale", f"{r}:{r}:force_original_aspect_ratio=increase:flags=bicubic"),
                  graph.add("crop", f"{r}:{r}"), graph.add("format", "rgb24"), graph.add("buffersink")]
        graph.link_nodes(*chain).configure()
        return graph
