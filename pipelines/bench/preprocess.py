"""The preprocessing job against plain ffmpeg doing the same extraction, on a generated H.264 corpus, 1 and 2
decoders: videos/s side by side, the driver's share of the bytes written, and a grown corpus's re-run
against its new videos alone.

The baseline is what one would do by hand without Ray: one ffmpeg process per video with the same settings
(one thread, 1 fps, bicubic short-side scale, centre crop) writing the frames as JPEG files, `processes`
at a time from a thread pool. The job does that plus picking frames, JPEG in Python, writing shards, the
index and the summary, and Ray's scheduling. The driver's share is of the shards' bytes that the driver
process wrote itself (its write syscalls, /proc/self/io); the grown corpus's re-run is timed against decoding
only the new videos into a fresh folder.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from pipelines.bench import common

WORKDIR = "the corpus and the shards"
EXAMPLE = "tempme bench preprocess --videos 36 --decoders 1,2 --json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=36, help="videos in the generated corpus (default %(default)s)")
    parser.add_argument("--lengths", default="5,10,20", help="video lengths in seconds, cycled (default %(default)s)")
    parser.add_argument("--size", default="320x240", help="source frame size (default %(default)s, as MSR-VTT)")
    parser.add_argument("--source-fps", type=int, default=30, help="source frame rate (default %(default)s)")
    parser.add_argument("--decoders", default="1,2", help="decoder counts to compare (default %(default)s)")
    parser.add_argument("--frames", type=int, default=12, help="frames per video (default %(default)s)")
    parser.add_argument("--resolution", type=int, default=224, help="frame side (default %(default)s)")
    parser.add_argument("--shards-per-decoder", type=int, default=3,
                        help="shards per decoder at the most decoders (a real corpus has thousands; default "
                             "%(default)s)")
    parser.add_argument("--growth", default="200,20", help="BASE,ADDED: a corpus of BASE short videos grown by "
                        "ADDED, re-run against ADDED alone; empty to skip (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the best counts")


def measure(args) -> dict:
    counts = common.numbers(args.decoders, "--decoders")
    lengths = common.numbers(args.lengths, "--lengths", kind=float)
    width, height = common.numbers(args.size, "--size", sep="x", least=2, most=2)
    growth_sizes = common.numbers(args.growth, "--growth", least=2, most=2) if args.growth.strip() else []
    per_shard = max(1, args.videos // (max(counts) * args.shards_per_decoder))
    shape = dict(frames=args.frames, resolution=args.resolution, samples_per_shard=per_shard)
    with common.scratch(args) as work:
        manifest = make_bench_corpus(work / "corpus", args.videos, lengths, (width, height), args.source_fps)
        videos = sorted((work / "corpus").glob("*.mp4"))
        common.start_ray(max(counts))
        run_job(first_rows(manifest, slice(0, 3), "warmup.csv"), work / "out-warmup", max(counts), **shape)
        plain, job = {}, {}
        for n in counts:
            plain[n] = max(plain_ffmpeg_rate(videos, n, 1.0, args.resolution) for _ in range(args.repeat))
            job[n] = max((run_job(manifest, work / f"out-{n}-{r}", n, **shape) for r in range(args.repeat)),
                         key=lambda j: j.rate)
        growth = growth_run(work, *growth_sizes, max(counts), args.frames, args.resolution, args.source_fps) \
            if growth_sizes else None
    result = {
        "videos": args.videos, "lengths_s": lengths, "size": args.size, "source_fps": args.source_fps,
        "frames": args.frames, "resolution": args.resolution, "samples_per_shard": per_shard,
        "plain_videos_per_s": plain, "job_videos_per_s": {n: j.rate for n, j in job.items()},
        "job_vs_plain": {n: job[n].rate / plain[n] for n in counts},
        "driver_share_of_shard_bytes": {n: j.driver_bytes / j.shard_bytes for n, j in job.items()},
        "growth": growth,
    }
    if len(counts) > 1:
        result["scaling_plain"] = plain[counts[-1]] / plain[counts[0]]
        result["scaling_job"] = job[counts[-1]].rate / job[counts[0]].rate
    return result


def render(result: dict) -> str:
    plain, counts = result["plain_videos_per_s"], list(result["plain_videos_per_s"])
    scaling = "scaling_job" in result
    lengths = result["lengths_s"]
    seconds = sum(lengths[i % len(lengths)] for i in range(result["videos"]))
    header = ["videos/s", *(f"{n} decoder" + ("s" if n > 1 else "") for n in counts)]
    header += [f"{counts[-1]} vs {counts[0]}"] if scaling else []
    job, share = result["job_videos_per_s"], result["driver_share_of_shard_bytes"]
    rows = [[name, *(f"{rates[n]:.2f}" for n in counts)]
            + ([f"{rates[counts[-1]] / rates[counts[0]]:.2f}x"] if scaling else [])
            for name, rates in (("plain ffmpeg (no Ray)", plain), ("tempme preprocess job", job))]
    rows.append(["job / plain", *(f"{result['job_vs_plain'][n]:.2f}x" for n in counts)] + [""] * scaling)
    rows.append(["driver's share of shard bytes", *(f"{100 * share[n]:.3f}%" for n in counts)] + [""] * scaling)
    lines = [f"preprocess benchmark: {result['videos']} H.264 videos ({result['size']}, {result['source_fps']} fps, "
             f"{','.join(f'{x:g}' for x in lengths)} s, {seconds:.0f} s in all) -> {result['frames']} frames of "
             f"{result['resolution']} px at 1 fps, {result['samples_per_shard']} per shard",
             common.table(header, rows)]
    if scaling:
        lines.append(f"job scaling / plain scaling: {result['scaling_job'] / result['scaling_plain']:.2f}")
    growth = result["growth"]
    if growth:
        lines.append(f"grown corpus: {growth['base']} videos + {growth['added']}: re-run {growth['rerun_s']:.2f} s, "
                     f"the {growth['added']} alone {growth['alone_s']:.2f} s: {growth['ratio']:.2f}x")
    return "\n".join(lines)


def make_bench_corpus(folder: Path, n_videos: int, lengths: list[float], size: tuple[int, int], fps: int) -> Path:
    """H.264 MP4s of the given lengths (cycled) from ffmpeg's testsrc2, and their manifest."""

    from pipelines.preprocess.media import ffmpeg_exe

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

    from pipelines.preprocess.media import ffmpeg_exe

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
    from pipelines.preprocess.job import PreprocessOptions, run_preprocess

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
