"""What decoding a video gives, whichever way it is decoded: the sampled frames and the facts of the stream.

Sampling follows the paper's code (CLIP4Clip lineage): frames at `fps` (1 by default), then `frames` of
them spread uniformly (`linspace(0, L-1, frames)` rounded down); a video with fewer frames keeps them all
and the sample says how many are valid (the reader pads and masks the rest). A long video may be cut into
windows (`Segmenting`): each window is sampled by the same rule over the frames at `fps` inside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DecodeError(Exception):
    """The input cannot give frames; the message says why, in words meant for the failure table, and `stage`
    whether it is the file ("decode") or a time limit ("timeout", worth another try)."""

    def __init__(self, message: str, stage: str = "decode"):
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class StreamInfo:
    demuxer: str
    codec: str
    width: int
    height: int
    fps: float | None          # the stream's nominal frame rate (average for variable frame rate)
    duration: float | None     # the container's declared duration, seconds


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray          # uint8 [valid, resolution, resolution, 3], the sampled frames in order
    timestamps: tuple[float, ...]  # seconds from the start, one per sampled frame
    available: int              # frames at the sampling rate before picking `frames` of them
    duration: float             # seconds (declared, else what was decoded)
    info: StreamInfo
    method: str = "sequential"   # how its frames were found: "seek" or "sequential"
    read_bytes: int = 0         # bytes of the source read to find them
    window: tuple[float, float] | None = None   # (start, end) seconds of the window sampled; None: all of it


@dataclass(frozen=True)
class Segmenting:
    """Windows of `seconds`, each starting `seconds - overlap` after the one before; the last one is shorter,
    and a video shorter than a window is one window."""
    seconds: float
    overlap: float = 0.0

    def slots(self, fps: float) -> tuple[int, int]:
        """(slots in a window, slots from one window's start to the next's) at `fps`."""
        return max(1, round(self.seconds * fps)), max(1, round((self.seconds - self.overlap) * fps))


def windows(available: int, fps: float, segmenting: Segmenting | None) -> list[tuple[int, int]]:
    """(first slot, slots) of each window of a video of `available` slots at `fps`: one window without
    segmenting; with it, no window that holds nothing the one before did not."""
    if segmenting is None:
        return [(0, available)]
    length, step = segmenting.slots(fps)
    found = []
    for start in range(0, available, step):
        count = min(length, available - start)
        if start and count <= length - step:
            break
        found.append((start, count))
    return found


def window_times(start: int, count: int, fps: float, duration: float) -> tuple[float, float]:
    return round(start / fps, 3), round(min((start + count) / fps, max(duration, start / fps)), 3)


def sample_indices(available: int, frames: int) -> list[int]:
    """Which of `available` frames to keep: all when there are at most `frames`, else spread uniformly."""
    if available <= frames:
        return list(range(available))
    return [int(i) for i in np.linspace(0, available - 1, num=frames, dtype=int)]
