"""Exact search latency over large random indexes (100k and 1M 512-d embeddings by default)."""
from __future__ import annotations

import argparse
import sys

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="100000,1000000", help="index sizes, comma-separated (default %(default)s)")
    parser.add_argument("--dim", type=int, default=512, help="embedding width (default %(default)s)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=50, help="timed single queries per size (default %(default)s)")
    parser.add_argument("--workdir", help="where the indexes are written (default: a temporary folder, removed)")
    parser.epilog = "Example: tempme bench search --sizes 100000,1000000 --queries 50"


def run(args) -> int:
    import shutil
    import tempfile
    import time

    import numpy as np

    from pipelines.index import IndexStore, ModelRef

    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = args.workdir or tempfile.mkdtemp(prefix="tempme-bench-search-")
    rng = np.random.default_rng(0)
    model = ModelRef("random", "0", "bench")
    print(f"exact search, {args.dim}-d float32, k={args.k}, {args.queries} single queries per size "
          f"(index built with IndexWriter, searched through memory-mapped .npy)")
    print(f"{'videos':>10} {'build s':>8} {'open ms':>8} {'first ms':>9} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'batch64 ms/q':>13}  goal")
    try:
        for n in sizes:
            location = f"{workdir}/index-{n}"
            t0 = time.perf_counter()
            with IndexStore(location).writer(model, part_rows=n) as writer:
                for start in range(0, n, 100_000):
                    rows = min(100_000, n - start)
                    emb = rng.standard_normal((rows, args.dim), dtype=np.float32)
                    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
                    writer.add([f"video{i}" for i in range(start, start + rows)], emb)
                writer.publish()
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            index = IndexStore(location).open()
            opened = (time.perf_counter() - t0) * 1000
            queries = rng.standard_normal((args.queries + 64, args.dim), dtype=np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            t0 = time.perf_counter()
            index.search(queries[0], args.k)
            first = (time.perf_counter() - t0) * 1000
            times = []
            for q in queries[1:args.queries + 1]:
                t0 = time.perf_counter()
                index.search(q, args.k)
                times.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            index.search(queries[-64:], args.k)
            batch = (time.perf_counter() - t0) * 1000 / 64
            goal = 50 if n <= 100_000 else 500 * n / 1_000_000
            p50, p95 = np.percentile(times, [50, 95])
            print(f"{n:>10,} {build:>8.1f} {opened:>8.1f} {first:>9.1f} {p50:>8.1f} {p95:>8.1f} {batch:>13.2f}  "
                  f"<{goal:.0f} ms {'met' if p95 < goal else 'MISSED'}", flush=True)
            del index
            shutil.rmtree(location, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
