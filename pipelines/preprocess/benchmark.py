"""Measure the preprocessing job against plain ffmpeg doing the same extraction, for `tempme bench preprocess`.

The baseline is what one would do by hand without Ray: one ffmpeg process per video with the same settings
(one thread, 1 fps, bicubic short-side scale, centre crop) writing the frames as JPEG files, `processes`
at a time from a thread pool. The job does that plus picking frames, JPEG in Python, writing shards, the
index and the summary, and Ray's scheduling. Also measured: the share of the shards' bytes that the driver
process wrote itself (its write syscalls, /proc/self/io), and a grown corpus's re-run against decoding
only the new videos into a fresh folder.
"""
from __future__ import annotations

import itertools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


@dataclass(frozen=True)
class JobRun:
    videos: int            # decoded by this run
    seconds: float         # the whole run, inputs to summary
    driver_bytes: int      # written by this process (the driver) during the run
    shard_bytes: int       # of all the shards in the folder

    @property
    def rate(self) -> float:
        return self.videos / self.seconds


def run_job(manifest: Path, out: Path, decoders: int, frames: int, resolution: int,
            samples_per_shard: int) -> JobRun:
    """The whole preprocessing job (inputs to summary) on an already started Ray."""
    written = driver_bytes_written()
    started = time.perf_counter()
    report = run_preprocess(PreprocessOptions(out=str(out), manifest=str(manifest), frames=frames,
                                              resolution=resolution, decoders=decoders,
                                              samples_per_shard=samples_per_shard), log=lambda line: None)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"benchmark inputs failed: {report.failures[:3]}")
    shard_bytes = sum(s["bytes"] for s in report.summary["splits"].values())
    return JobRun(report.processed, seconds, driver_bytes_written() - written, shard_bytes)


def driver_bytes_written() -> int:
    """Bytes this process has passed to write syscalls so far (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/io") as f:
            return int(dict(line.split(": ") for line in f.read().splitlines())["wchar"])
    except OSError:
        return 0


def first_rows(manifest: Path, rows: slice, name: str) -> Path:
    """A manifest of some of `manifest`'s rows (header kept), beside it."""
    header, *lines = manifest.read_text().splitlines(keepends=True)
    path = manifest.with_name(name)
    path.write_text(header + "".join(lines[rows]))
    return path


def growth_run(work: Path, base: int, added: int, decoders: int, frames: int, resolution: int,
               source_fps: int) -> dict:
    """A corpus of `base` two-second videos grown by `added`: the re-run's seconds against the `added`
    videos alone in a fresh folder."""
    manifest = make_bench_corpus(work / "growth", base + added, [2.0], (320, 240), source_fps)
    shape = dict(frames=frames, resolution=resolution, samples_per_shard=max(1, added // decoders))
    run_job(first_rows(manifest, slice(0, base), "base.csv"), work / "grown", decoders, **shape)
    rerun = run_job(manifest, work / "grown", decoders, **shape)
    alone = run_job(first_rows(manifest, slice(base, None), "added.csv"), work / "alone", decoders, **shape)
    if not rerun.videos == alone.videos == added:
        raise RuntimeError(f"the grown re-run decoded {rerun.videos} videos and the new ones alone "
                           f"{alone.videos}, not {added}")
    return {"base": base, "added": added, "rerun_s": rerun.seconds, "alone_s": alone.seconds,
            "ratio": rerun.seconds / alone.seconds}
