"""Preprocessing job vs plain ffmpeg on a generated H.264 corpus, 1 and 2 decoders: videos/s side by side."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=36, help="videos in the generated corpus (default %(default)s)")
    parser.add_argument("--lengths", default="5,10,20", help="video lengths in seconds, cycled (default %(default)s)")
    parser.add_argument("--size", default="320x240", help="source frame size (default %(default)s, as MSR-VTT)")
    parser.add_argument("--source-fps", type=int, default=30, help="source frame rate (default %(default)s)")
    parser.add_argument("--decoders", default="1,2", help="decoder counts to compare (default %(default)s)")
    parser.add_argument("--frames", type=int, default=12, help="frames per video (default %(default)s)")
    parser.add_argument("--resolution", type=int, default=224, help="frame side (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the best counts")
    parser.add_argument("--workdir", help="keep the corpus and shards here (default: a temporary folder)")
    parser.epilog = "Example: tempme bench preprocess --videos 36 --decoders 1,2"


def run(args) -> int:
    import ray

    from pipelines.preprocess.benchmark import job_rate, make_bench_corpus, plain_ffmpeg_rate

    counts = [int(x) for x in args.decoders.split(",")]
    lengths = [float(x) for x in args.lengths.split(",")]
    width, height = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir or scratch)
        manifest = make_bench_corpus(work / "corpus", args.videos, lengths, (width, height), args.source_fps)
        videos = sorted((work / "corpus").glob("*.mp4"))
        warmup = work / "corpus" / "warmup.csv"
        warmup.write_text("".join(manifest.read_text().splitlines(keepends=True)[:3]))
        if not ray.is_initialized():
            ray.init(num_cpus=max(counts), include_dashboard=False, logging_level="WARNING")
        job_rate(warmup, work / "out-warmup", max(counts), args.frames, args.resolution)  # workers started
        plain, job = {}, {}
        for n in counts:
            plain[n] = max(plain_ffmpeg_rate(videos, n, 1.0, args.resolution) for _ in range(args.repeat))
            job[n] = max(job_rate(manifest, work / f"out-{n}-{r}", n, args.frames, args.resolution)
                         for r in range(args.repeat))
    seconds = sum(lengths[i % len(lengths)] for i in range(args.videos))
    print(f"preprocess benchmark: {args.videos} H.264 videos ({args.size}, {args.source_fps} fps, "
          f"{args.lengths} s, {seconds:.0f} s in all) -> {args.frames} frames of {args.resolution} px at 1 fps; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    header = "".join(f"{f'{n} decoder' + ('s' if n > 1 else ''):>14}" for n in counts)
    scaling = len(counts) > 1
    print(f"{'videos/s':<24}{header}" + (f"{f'{counts[-1]} vs {counts[0]}':>10}" if scaling else ""))
    for name, rates in (("plain ffmpeg (no Ray)", plain), ("tempme preprocess job", job)):
        row = "".join(f"{rates[n]:>14.2f}" for n in counts)
        print(f"{name:<24}{row}" + (f"{rates[counts[-1]] / rates[counts[0]]:>9.2f}x" if scaling else ""))
    print(f"{'job / plain':<24}" + "".join(f"{job[n] / plain[n]:>13.2f}x" for n in counts))
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
