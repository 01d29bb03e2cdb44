"""Which ffmpeg binary the pipeline runs: the system's when there is one, else the one imageio-ffmpeg ships.

That fallback makes `pip install` alone enough. imageio-ffmpeg ships no ffprobe, so nothing here relies on
it: stream facts (duration, frame rate, size) are read from ffmpeg's own log of the input.
"""
from __future__ import annotations

import functools
import shutil

import imageio_ffmpeg


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    system = shutil.which("ffmpeg")
    if system:
        return system

    return imageio_ffmpeg.get_ffmpeg_exe()
