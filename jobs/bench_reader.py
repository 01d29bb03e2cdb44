"""Shard reader throughput: videos/s per core delivered as normalised tensors, with and without augmentation."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jobs.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="shard folder to read (default: preprocess a generated synthetic corpus)")
    parser.add_argument("--split", default="train", help="split to read (default %(default)s)")
    parser.add_argument("--videos", type=int, default=24, help="videos in the generated corpus (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per measurement (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="DataLoader batch size (default %(default)s)")
    parser.epilog = "Example: tempme bench reader --shards outputs/shards --split train"


def videos_per_second(shards: str, split: str, augment: bool, loader_workers: int, batch_size: int,
                      epochs: int) -> float:
    """Whole videos ([T,3,H,W] normalised + mask) per second through one DataLoader over `epochs` epochs,
    in steady state: the first batch (workers starting) is not counted."""
    from torch.utils.data import DataLoader, IterableDataset

    from pipelines.shards import ShardDataset, collate

    class Epochs(IterableDataset):
        def __init__(self, ds):
            self.ds = ds

        def __iter__(self):
            for epoch in range(epochs):
                self.ds.set_epoch(epoch)
                yield from self.ds

    ds = ShardDataset(shards, split, mode="videos", augment=augment, shuffle=True)
    loader = iter(DataLoader(Epochs(ds), batch_size=batch_size, num_workers=loader_workers, collate_fn=collate))
    next(loader)
    started = time.perf_counter()
    done = sum(len(batch["id"]) for batch in loader)
    return done / (time.perf_counter() - started)


def run(args) -> int:
    import torch

    from pipelines.shards import read_summary

    torch.set_num_threads(1)   # one core in-process; DataLoader workers use one thread each anyway
    with tempfile.TemporaryDirectory() as scratch:
        shards = args.shards or _make_shards(Path(scratch), args.videos)
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


def _make_shards(scratch: Path, n_videos: int) -> str:
    import ray

    from pipelines.preprocess import PreprocessOptions, run_preprocess
    from pipelines.synthetic import make_synthetic_corpus

    manifest = make_synthetic_corpus(scratch / "corpus", n_videos=n_videos, test_fraction=0.25)
    ray.init(include_dashboard=False, logging_level="WARNING")
    out = str(scratch / "shards")
    run_preprocess(PreprocessOptions(out=out, manifest=str(manifest), samples_per_shard=8), log=lambda line: None)
    ray.shutdown()
    return out


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
