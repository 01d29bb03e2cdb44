"""Measure the preprocessing job against plain ffmpeg doing the same extraction, for `tempme bench preprocess`.

The baseline is what one would do by hand without Ray: one ffmpeg process per video with the same settings
(one thread, 1 fps, bicubic short-side scale, centre crop) writing the frames as JPEG files, `processes`
at a time from a thread pool. The job does that plus picking frames, JPEG in Python, writing shards, the
index and the summary, and Ray Data's scheduling.
"""
from __future__ import annotations

import itertools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.media import ffmpeg_exe
from pipelines.preprocess.job import PreprocessOptions, run_preprocess


def make_bench_corpus(folder: Path, n_videos: int, lengths: list[float], size: tuple[int, int], fps: int) -> Path:
    """H.264 MP4s of the given lengths (cycled) from ffmpeg's testsrc2, and their manifest."""
    import ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["video,id,captions,split"]
    for i, length in zip(range(n_videos), itertools.cycle(lengths)):
        path = folder / f"bench{i:04d}.mp4"
        (ffmpeg.input(f"testsrc2=s={size[0]}x{size[1]}:r={fps}:d={length}", f="lavfi")
         .output(str(path), vcodec="libx264", pix_fmt="yuv420p", preset="veryfast")
         .global_args("-hide_banner", "-loglevel", "error")
         .run(cmd=ffmpeg_exe(), overwrite_output=True))
        lines.append(f"{path.name},bench{i:04d},a test pattern,train")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def plain_ffmpeg_rate(videos: list[Path], processes: int, fps: float, resolution: int) -> float:
    """Videos/s of plain ffmpeg processes extracting the frames to JPEG files, `processes` at once."""
    import ffmpeg

    def extract(video: Path, folder: str) -> None:
        (ffmpeg.input(f"file:{video}", threads=1)["V:0"]
         .filter("fps", fps=fps, eof_action="pass")
         .filter("scale", resolution, resolution, force_original_aspect_ratio="increase", flags="bicubic")
         .filter("crop", resolution, resolution)
         .output(f"{folder}/{video.stem}-%03d.jpg", threads=1, **{"q:v": 2})
         .global_args("-hide_banner", "-loglevel", "error", "-nostdin", "-filter_complex_threads", "1")
         .run(cmd=ffmpeg_exe(), overwrite_output=True))

    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(processes) as pool:
        started = time.perf_counter()
        list(pool.map(lambda v: extract(v, folder), videos))
        return len(videos) / (time.perf_counter() - started)


def job_rate(manifest: Path, out: Path, decoders: int, frames: int, resolution: int) -> float:
    """Videos/s of the whole preprocessing job (inputs to summary) on an already started Ray."""
    started = time.perf_counter()
    report = run_preprocess(PreprocessOptions(out=str(out), manifest=str(manifest), frames=frames,
                                              resolution=resolution, decoders=decoders), log=lambda line: None)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"benchmark inputs failed: {report.failures[:3]}")
    return report.processed / seconds
