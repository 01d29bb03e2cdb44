"""Search latency and recall@k, exact vs ANN, over large clustered indexes (see pipelines/index/benchmark.py)."""
from __future__ import annotations

import argparse
import json
import sys

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1000000,5000000", help="index sizes, comma-separated (default %(default)s)")
    parser.add_argument("--exact-sizes", default="100000,200000,1000000",
                        help="sizes also searched exactly, all vectors in memory (default %(default)s)")
    parser.add_argument("--dim", type=int, default=512, help="embedding width (default %(default)s)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=100, help="timed single queries per size (default %(default)s)")
    parser.add_argument("--workdir", help="where the indexes are written (default: a temporary folder, removed)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.epilog = "Example: tempme bench search --sizes 100000,1000000 --queries 50 --json"


def run(args) -> int:
    from pipelines.index.benchmark import measure

    sizes = sorted({int(s) for s in args.sizes.split(",")} | {int(s) for s in args.exact_sizes.split(",") if s})
    exact = tuple(int(s) for s in args.exact_sizes.split(",") if s)
    log = (lambda row: None) if args.json else (lambda row: print(_line(row), flush=True))
    if not args.json:
        print(f"{args.dim}-d clustered vectors, k={args.k}, {args.queries} single queries per size; recall@k vs exact")
        print(f"{'videos':>10} {'write s':>8} {'exact p50':>10} {'p95':>7} {'ANN build s':>12} {'ANN p50':>8} "
              f"{'p95':>7} {'recall':>7}")
    rows = measure(sizes, args.dim, args.k, args.queries, exact, args.workdir, log)
    if args.json:
        print(json.dumps({"benchmark": "search", "rows": rows}, indent=1))
    return 0


def _line(r: dict) -> str:
    exact = f"{r['exact_p50_ms']:>10.2f} {r['exact_p95_ms']:>7.2f}" if "exact_p50_ms" in r else f"{'-':>10} {'-':>7}"
    return (f"{r['videos']:>10,} {r['write_s']:>8.1f} {exact} {r['ann_build_s']:>12.1f} {r['ann_p50_ms']:>8.2f} "
            f"{r['ann_p95_ms']:>7.2f} {r['ann_recall']:>7.3f}")


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
