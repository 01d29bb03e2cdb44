"""Shard reader throughput: videos/s delivered as uint8 batches, from the shards' own store and from a local
copy side by side (the object-store cost), with 1 and 2 DataLoader workers."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="shard folder or URI to read (default: preprocess a generated synthetic "
                                         "corpus on local disk)")
    parser.add_argument("--split", default="train", help="split to read (default %(default)s)")
    parser.add_argument("--videos", type=int, default=24, help="videos in the generated corpus (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default %(default)s)")
    parser.add_argument("--workers", default="1,2", help="DataLoader worker counts (default %(default)s)")
    parser.add_argument("--augment", action="store_true", help="with RandAugment, as training reads")
    parser.add_argument("--no-local-copy", action="store_true",
                        help="measure only the shards as given, not also a local copy of them")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.epilog = "Example: tempme bench reader --shards s3://bucket/shards --json"


def run(args) -> int:
    import torch

    from pipelines.reader_benchmark import local_copy, measure
    from pipelines.storage import is_local_uri
    from pipelines.synthetic import make_synthetic_shards

    torch.set_num_threads(1)   # DataLoader workers use one thread each; so does the main process here
    with tempfile.TemporaryDirectory() as scratch:
        if args.shards:
            shards = args.shards
        else:
            import ray

            shards = str(make_synthetic_shards(Path(scratch), args.videos, samples_per_shard=8))
            ray.shutdown()     # the decoders' cluster would otherwise hold cores while the reader is measured
        sources = [("as given", shards)]
        if not args.no_local_copy and not is_local_uri(shards):
            sources.append(("local copy", local_copy(shards, str(Path(scratch) / "local"))))
        rows = measure(sources, args.split, [int(w) for w in args.workers.split(",")], args.batch_size,
                       args.epochs, args.augment)
    by = {(r.source, r.workers): r.videos_per_s for r in rows}
    ratios = {f"{w}_workers": by[("as given", w)] / by[("local copy", w)]
              for w in {r.workers for r in rows} if ("local copy", w) in by and by[("local copy", w)]}
    if args.json:
        print(json.dumps({"split": args.split, "load_average": os.getloadavg()[0], "rows": [asdict(r) for r in rows],
                          "given_over_local": ratios}, indent=1))
        return 0
    print(f"reader benchmark: {shards} split {args.split}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'source':<12}{'workers':>8}{'videos/s':>10}")
    for r in rows:
        print(f"{r.source:<12}{r.workers:>8}{r.videos_per_s:>10.1f}")
    for name, ratio in sorted(ratios.items()):
        print(f"as given / local copy, {name.replace('_', ' ')}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
