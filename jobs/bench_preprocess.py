"""Preprocessing job vs plain ffmpeg on a generated H.264 corpus, 1 and 2 decoders: videos/s side by side, the
driver's share of the bytes written, and a grown corpus's re-run against its new videos alone."""
from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--shards-per-decoder", type=int, default=3,
                        help="shards per decoder at the most decoders (a real corpus has thousands; default %(default)s)")
    parser.add_argument("--growth", default="200,20", help="BASE,ADDED: a corpus of BASE short videos grown by "
                        "ADDED, re-run against ADDED alone; empty to skip (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the best counts")
    parser.add_argument("--workdir", help="keep the corpus and shards here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.epilog = "Example: tempme bench preprocess --videos 36 --decoders 1,2 --json"


def run(args) -> int:
    import ray

    from pipelines.preprocess.benchmark import (first_rows, growth_run, make_bench_corpus, plain_ffmpeg_rate,
                                                run_job)

    counts = [int(x) for x in args.decoders.split(",")]
    lengths = [float(x) for x in args.lengths.split(",")]
    width, height = (int(x) for x in args.size.split("x"))
    per_shard = max(1, args.videos // (max(counts) * args.shards_per_decoder))
    shape = dict(frames=args.frames, resolution=args.resolution, samples_per_shard=per_shard)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir or scratch)
        manifest = make_bench_corpus(work / "corpus", args.videos, lengths, (width, height), args.source_fps)
        videos = sorted((work / "corpus").glob("*.mp4"))
        if not ray.is_initialized():
            ray.init(num_cpus=max(counts), include_dashboard=False, logging_level="WARNING")
        run_job(first_rows(manifest, slice(0, 3), "warmup.csv"), work / "out-warmup", max(counts), **shape)
        plain, job = {}, {}
        for n in counts:
            plain[n] = max(plain_ffmpeg_rate(videos, n, 1.0, args.resolution) for _ in range(args.repeat))
            job[n] = max((run_job(manifest, work / f"out-{n}-{r}", n, **shape) for r in range(args.repeat)),
                         key=lambda j: j.rate)
        growth = None
        if args.growth:
            base, added = (int(x) for x in args.growth.split(","))
            growth = growth_run(work, base, added, max(counts), args.frames, args.resolution, args.source_fps)
    scaling = len(counts) > 1
    result = {
        "videos": args.videos, "cpus": os.cpu_count(), "samples_per_shard": per_shard,
        "plain_videos_per_s": plain, "job_videos_per_s": {n: j.rate for n, j in job.items()},
        "job_vs_plain": {n: job[n].rate / plain[n] for n in counts},
        "driver_share_of_shard_bytes": {n: j.driver_bytes / j.shard_bytes for n, j in job.items()},
        "growth": growth,
    }
    if scaling:
        result["scaling_plain"] = plain[counts[-1]] / plain[counts[0]]
        result["scaling_job"] = job[counts[-1]].rate / job[counts[0]].rate
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    seconds = sum(lengths[i % len(lengths)] for i in range(args.videos))
    print(f"preprocess benchmark: {args.videos} H.264 videos ({args.size}, {args.source_fps} fps, "
          f"{args.lengths} s, {seconds:.0f} s in all) -> {args.frames} frames of {args.resolution} px at 1 fps, "
          f"{per_shard} per shard; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    header = "".join(f"{f'{n} decoder' + ('s' if n > 1 else ''):>14}" for n in counts)
    print(f"{'videos/s':<24}{header}" + (f"{f'{counts[-1]} vs {counts[0]}':>10}" if scaling else ""))
    for name, rates in (("plain ffmpeg (no Ray)", plain), ("tempme preprocess job", result["job_videos_per_s"])):
        row = "".join(f"{rates[n]:>14.2f}" for n in counts)
        print(f"{name:<24}{row}" + (f"{rates[counts[-1]] / rates[counts[0]]:>9.2f}x" if scaling else ""))
    print(f"{'job / plain':<24}" + "".join(f"{result['job_vs_plain'][n]:>13.2f}x" for n in counts))
    if scaling:
        print(f"job scaling / plain scaling: {result['scaling_job'] / result['scaling_plain']:.2f}")
    print(f"{'driver-written share':<24}" + "".join(f"{100 * result['driver_share_of_shard_bytes'][n]:>13.3f}%"
                                                  for n in counts) + "   (of the shards' bytes)")
    if growth:
        print(f"grown corpus: {growth['base']} videos + {growth['added']}: re-run {growth['rerun_s']:.2f} s, "
              f"the {growth['added']} alone {growth['alone_s']:.2f} s: {growth['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
