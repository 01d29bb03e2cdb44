"""Embedding job vs a plain loop over the same shards with the same model, 1 and 2 workers: videos/s side by side."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import jobs.cli

RATES = {"end_to_end": "end-to-end", "stage": "embedding stage", "steady": "steady"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="shard folder to embed (default: a synthetic corpus preprocessed here)")
    parser.add_argument("--videos", type=int, default=64,
                        help="videos of the synthetic corpus made when no --shards (default %(default)s)")
    parser.add_argument("--preset", default="tempme-tiny-12f",
                        help="model preset, random weights (default %(default)s; tempme-b32-12f for real size)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per model call (default %(default)s)")
    parser.add_argument("--workers", default="1,2",
                        help="comma-separated worker counts of the job; the first is the base of the scaling "
                             "(default %(default)s)")
    parser.add_argument("--workdir", help="keep the corpus, model and indexes here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.epilog = "Example: tempme bench embed --videos 64 --preset tempme-tiny-12f --batch-size 8"


def run(args) -> int:
    import logging

    import ray

    from pipelines.embed import EmbedError
    from pipelines.embed.benchmark import make_random_adapter, run_benchmark
    from pipelines.synthetic import make_synthetic_shards

    logging.basicConfig(level=logging.WARNING)
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        print(f"tempme bench embed: --workers {args.workers!r} is not a comma-separated list of numbers",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as scratch:
        work = Path(args.workdir or scratch)
        try:
            adapter = make_random_adapter(args.preset, work / "model")
            if not ray.is_initialized():
                # one logical CPU more than the actors need: the decode and write stages run beside them
                ray.init(num_cpus=max(counts) + 1, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=False)
            shards = Path(args.shards) if args.shards else make_synthetic_shards(work / "synthetic", args.videos)
            result = run_benchmark(shards, adapter, work / "runs", args.batch_size, tuple(counts))
        except (EmbedError, FileNotFoundError, ValueError) as e:
            print(f"tempme bench embed: {e}", file=sys.stderr)
            return 2

    if args.json:
        base = next((m for m in result.jobs if m.workers == 1), None)
        print(json.dumps({**asdict(result),
                          "overhead_pct_1_worker": {r: result.overhead(base, r) for r in RATES} if base else None,
                          "scaling": [{"workers": m.workers, **{r: result.scaling(m, r) for r in RATES}}
                                      for m in result.jobs[1:]]}, indent=1))
        return 0
    print(f"embed benchmark: {result.plain.videos} videos of {shards}, model {args.preset} (random weights), "
          f"batch {args.batch_size}, CPU; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("one torch thread per process: the plain loop runs in this process with 1 thread (no Ray); "
          "each job actor has 1 CPU and 1 thread")
    print(f"{'videos/s':<24}" + "".join(f"{name:>17}" for name in RATES.values()))
    rows = [("plain loop (no Ray)", result.plain)] + [
        (f"embed job, {m.workers} worker" + ("s" if m.workers > 1 else ""), m) for m in result.jobs]
    for label, m in rows:
        print(f"{label:<24}" + "".join(_cell(getattr(m, rate), ".2f") for rate in RATES))
    for m in (m for m in result.jobs if m.workers == 1):    # same resources as the plain loop
        print(f"{'job overhead, 1 worker':<24}" + "".join(_cell(result.overhead(m, r), "+.1f", "%") for r in RATES))
    for m in result.jobs[1:]:
        print(f"{f'{m.workers} vs {counts[0]} workers':<24}" + "".join(_cell(result.scaling(m, r), ".2f", "x")
                                                                     for r in RATES))
    print(f"embeddings: every job index equals the plain loop's (largest difference {result.max_difference:.1e})")
    print("end-to-end: the whole call, the Ray cluster being up already\n"
          "embedding stage: the job's own EmbedReport.seconds, actor start and model load included "
          "(plain loop: model load + loop)\n"
          "steady: slope of videos done against time after every worker's first batch (n/a: too few batches)\n"
          "overhead: extra time per video over the plain loop")
    return 0


def _cell(value: float | None, spec: str, unit: str = "") -> str:
    return f"{'n/a' if value is None else format(value, spec) + unit:>17}"


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
