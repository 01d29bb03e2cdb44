"""Decode one video into the frames the model sees, with one ffmpeg process (built with ffmpeg-python).

Sampling follows the paper's code (CLIP4Clip lineage): frames at `fps` (1 by default), then `frames` of
them spread uniformly (`linspace(0, L-1, frames)` rounded down); a video with fewer frames keeps them all
and the sample says how many are valid (the reader pads and masks the rest).

Everything heavy happens inside ffmpeg, on one thread per decoder (parallelism comes from running several
decoders): the `fps` filter drops frames before anything else touches them, the short side is scaled to
`resolution` with bicubic interpolation and the centre `resolution` x `resolution` is cropped, and only
those frames leave ffmpeg, as raw RGB through a pipe. Nothing is decoded twice or kept at full size.

Stream facts (container duration, frame rate, size, codec) come from ffmpeg's own log of the input, since
imageio-ffmpeg ships no ffprobe. Memory: every frame at `fps` is held until the end (resolution^2 * 3
bytes, 150 KB per second of video at 224 and 1 fps), then all but the sampled ones are dropped.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import numpy as np

from pipelines.media import ffmpeg_exe

IMAGE_DEMUXERS = re.compile(r"^(image2|\w+_pipe)$")          # a still picture, not a video
CORRUPTION = re.compile(r"partial file|ended prematurely|corrupt|Invalid NAL|error while decoding", re.I)


class DecodeError(Exception):
    """The input cannot give frames; the message says why, in words meant for the failure table."""


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


def sample_indices(available: int, frames: int) -> list[int]:
    """Which of `available` frames to keep: all when there are at most `frames`, else spread uniformly."""
    if available <= frames:
        return list(range(available))
    return [int(i) for i in np.linspace(0, available - 1, num=frames, dtype=int)]


def decode_video(path: str, *, frames: int, fps: float, resolution: int, timeout: float) -> DecodedVideo:
    """Sampled frames of the local video file `path`, or `DecodeError` saying why there are none."""
    import ffmpeg

    graph = (
        ffmpeg.input(f"file:{path}", threads=1)["V:0"]      # first real video stream (not cover art)
        .filter("fps", fps=fps, eof_action="pass")          # 'pass' keeps a frame of sub-second videos
        .filter("scale", resolution, resolution, force_original_aspect_ratio="increase", flags="bicubic")
        .filter("crop", resolution, resolution)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .global_args("-hide_banner", "-nostats", "-nostdin", "-filter_complex_threads", "1")
    )
    process = ffmpeg.run_async(graph, cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise DecodeError(f"ffmpeg took longer than {timeout:g} s") from None
    log = err.decode("utf-8", "replace")
    info = parse_stream_info(log)
    if process.returncode != 0:
        raise DecodeError(_failure_reason(log, info, process.returncode))
    if IMAGE_DEMUXERS.match(info.demuxer):
        raise DecodeError(f"a still image ({info.codec} picture), not a video")
    frame_bytes = resolution * resolution * 3
    available = len(out) // frame_bytes
    if available == 0:
        raise DecodeError("no frames could be decoded")
    decoded_seconds = available / fps
    if info.duration and decoded_seconds < 0.9 * info.duration - 1.0 and CORRUPTION.search(log):
        raise DecodeError(f"truncated or corrupt: frames stop at {decoded_seconds:.1f} s of the "
                          f"{info.duration:.1f} s the container declares")
    picks = sample_indices(available, frames)
    every = np.frombuffer(out, dtype=np.uint8, count=available * frame_bytes)
    every = every.reshape(available, resolution, resolution, 3)
    return DecodedVideo(
        frames=np.ascontiguousarray(every[picks]),
        timestamps=tuple(round(i / fps, 3) for i in picks),
        available=available,
        duration=info.duration or decoded_seconds,
        info=info,
    )


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
