"""Training throughput (videos/s) and peak memory per worker with 1 and 2 CPU workers, tempme vs lora, and a
learning check on the synthetic captioned corpus."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="shard folder to train on (default: a synthetic corpus made here)")
    parser.add_argument("--presets", default="tempme-tiny-12f,lora-tiny-12f", help="comma-separated presets")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement")
    parser.add_argument("--batch-per-worker", type=int, default=4, help="pairs per worker per step")
    parser.add_argument("--learn", action="store_true",
                        help="also run the learning check: tiny model, synthetic corpus, held-out test R@1 vs chance")
    parser.add_argument("--videos", type=int, default=64, help="videos of the synthetic corpus made when no --shards")
    parser.add_argument("--learn-epochs", type=int, default=12, help="epochs of the learning check")
    parser.add_argument("--memory-videos", default="1000,10000",
                        help="training-split sizes at which a worker's peak memory is measured (hard-linked copies "
                             "of the corpus' shards; empty: skip)")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.epilog = "Example: tempme bench train --workers 1,2 --steps 12 --learn"


def run(args) -> int:
    import logging

    import ray

    from pipelines.synthetic import make_synthetic_shards
    from pipelines.train.bench import learning_check, measure_memory, measure_throughput

    logging.basicConfig(level=logging.WARNING)
    presets, worker_counts = args.presets.split(","), [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(args.workdir or tmp)
        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        shards = Path(args.shards) if args.shards else make_synthetic_shards(workdir / "synthetic", args.videos)
        rows = measure_throughput(shards, workdir / "throughput", presets, worker_counts, args.steps,
                                  args.batch_per_worker)
        counts = [int(v) for v in args.memory_videos.split(",") if v]
        memory = measure_memory(shards, workdir / "memory", counts, args.steps) if counts else []
        check = learning_check(shards, workdir / "learning", args.learn_epochs) if args.learn else None

    if args.json:
        print(json.dumps({"throughput": [asdict(r) for r in rows], "memory": [asdict(m) for m in memory],
                          "learning_check": asdict(check) if check else None}, indent=1))
        return 0
    print(f"training throughput, {args.steps} steps of {args.batch_per_worker} pairs per worker, CPU "
          f"(steady state; first logging window left out)")
    print(f"{'preset':18s} {'workers':>7s} {'videos/s':>9s} {'vs ' + presets[-1].split('-')[0]:>8s} {'vs 1 worker':>12s}  peak MB per worker")
    rate = {(r.preset, r.workers): r.videos_per_s for r in rows}
    for r in rows:
        print(f"{r.preset:18s} {r.workers:7d} {r.videos_per_s:9.2f} "
              f"{r.videos_per_s / rate[(presets[-1], r.workers)]:7.2f}x "
              f"{r.videos_per_s / rate[(r.preset, worker_counts[0])]:11.2f}x  "
              + ", ".join(f"{m:.0f}" for m in r.peak_memory_mb))
    if memory:
        print("\npeak memory of one training worker (tiny TempMe, data loading in its process) by training-split size")
        for m in memory:
            print(f"  {m.train_videos:>8d} videos: {m.peak_memory_mb:7.0f} MB "
                  f"({m.peak_memory_mb - memory[0].peak_memory_mb:+.0f} MB vs {memory[0].train_videos}); "
                  f"the reader holds {m.reader_held_mb:.2f} MiB")
    if check:
        print(f"\nlearning check: {check.preset} from random weights, {check.steps} steps in {check.seconds:.0f} s; "
              f"held-out test split of {check.test_videos} videos")
        print(f"  text-to-video R@1 {check.t2v_r1:.1f}% (chance {check.chance_r1:.1f}%), R@5 {check.metrics['t2v_r5']:.1f}%, "
              f"video-to-text R@1 {check.metrics['v2t_r1']:.1f}%, t2v median rank {check.metrics['t2v_medr']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
