"""Shard reader throughput: videos/s per core delivered as normalised tensors, with and without augmentation."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="shard folder to read (default: preprocess a generated synthetic corpus)")
    parser.add_argument("--split", default="train", help="split to read (default %(default)s)")
    parser.add_argument("--videos", type=int, default=24, help="videos in the generated corpus (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per measurement (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="DataLoader batch size (default %(default)s)")
    parser.epilog = "Example: tempme bench reader --shards outputs/shards --split train"


def run(args) -> int:
    import ray
    import torch

    from pipelines.reader_benchmark import videos_per_second
    from pipelines.shards import read_summary
    from pipelines.synthetic import make_synthetic_shards

    torch.set_num_threads(1)   # one core in-process; DataLoader workers use one thread each anyway
    with tempfile.TemporaryDirectory() as scratch:
        if args.shards:
            shards = args.shards
        else:
            shards = str(make_synthetic_shards(Path(scratch), args.videos, samples_per_shard=8))
            ray.shutdown()     # the decoders' cluster would otherwise hold cores while the reader is measured
        summary = read_summary(shards)
        frames, side = summary["options"]["frames"], summary["options"]["resolution"]
        print(f"reader benchmark: {shards} split {args.split} ({summary['splits'][args.split]['samples']} videos, "
              f"{frames} frames of {side} px); load average {os.getloadavg()[0]:.1f}")
        print(f"{'':<42}{'videos/s':>10}{'cores':>7}{'videos/s/core':>15}")
        for augment in (False, True):
            for workers in (0, 2):
                rate = videos_per_second(shards, args.split, augment, workers, args.batch_size, args.epochs)
                cores = max(workers, 1)
                label = f"{'RandAugment' if augment else 'no augment'}, " + (
                    "in the main process" if workers == 0 else f"{workers} DataLoader workers")
                print(f"{label:<42}{rate:>10.1f}{cores:>7}{rate / cores:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
