"""What each worker reads, and the step plan every worker follows.

Every rank reads its own contiguous part of the epoch's shuffled (video, caption) pairs (`ShardDataset`
splits them; parts differ by at most one). An epoch covers every pair once: it lasts as many steps as the
largest part needs, so near the end a rank may contribute a smaller batch, or none; the loss gathers
whatever the ranks have. The plan is computed once, before any worker starts, so every rank and every
restart agrees on the step count.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Iterator

from torch.utils.data import DataLoader

from pipelines.shards import ShardDataset, collate, shard_index
from pipelines.storage import Location

from .config import ConfigError, TrainJobConfig


@dataclass(frozen=True)
class TrainPlan:
    train_pairs: int          # (video, caption) pairs of the training split: one epoch
    train_videos: int
    local_batch: int          # pairs per rank per step (the last steps of an epoch may have fewer)
    steps_per_epoch: int
    total_steps: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.train_pairs} pairs of {self.train_videos} videos per epoch, {self.steps_per_epoch} steps "
                f"of {self.local_batch} per worker, {self.total_steps} steps in all")


def _split_samples(cfg: TrainJobConfig, key: str):
    split = getattr(cfg.data, key)
    try:
        samples = shard_index(cfg.data.shards, split)
    except FileNotFoundError:
        samples = []
    if not samples:
        raise ConfigError(f"data.{key}", f"split {split!r} has no samples in {cfg.data.shards}")
    return samples


def plan_training(cfg: TrainJobConfig) -> TrainPlan:
    """Check the shard folder and every split the config names; the steps of the whole run."""
    if not Location.of(cfg.data.shards).exists():
        raise ConfigError("data.shards", f"no such folder {cfg.data.shards}")
    for key in ("eval_split", "test_split"):
        if getattr(cfg.data, key) is not None:
            _split_samples(cfg, key)
    train = _split_samples(cfg, "train_split")
    pairs = sum(s.captions for s in train)
    world = cfg.scaling.num_workers
    local = cfg.train.batch_size // world
    steps_per_epoch = math.ceil(math.ceil(pairs / world) / local)
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    return TrainPlan(train_pairs=pairs, train_videos=len(train), local_batch=local,
                     steps_per_epoch=steps_per_epoch, total_steps=total)


def _items(dataset: ShardDataset, loader_workers: int) -> Iterator[dict]:
    """The dataset's items in a fixed order, decoded by `loader_workers` processes (0: in this one)."""
    return iter(DataLoader(dataset, batch_size=None, num_workers=loader_workers))


def train_batches(cfg: TrainJobConfig, plan: TrainPlan, rank: int, world: int, epoch: int,
                  skip: int = 0) -> Iterator[dict]:
    """This rank's batches of `epoch` after the first `skip`: exactly `steps_per_epoch - skip` of them.

    A batch is `shards.collate`'s dict (video, mask, caption, id, ...); an empty dict once this rank's part
    of the epoch is used up. The order is fixed by (seed, epoch), so skipping (after a restart) continues
    where the interrupted run was, without reading or decoding the skipped items.
    """
    dataset = ShardDataset(cfg.data.shards, cfg.data.train_split, mode="pairs", rank=rank, world_size=world,
                           augment=cfg.data.augment, seed=cfg.train.seed, epoch=epoch,
                           skip=skip * plan.local_batch)
    items = _items(dataset, cfg.data.loader_workers)
    for _ in range(plan.steps_per_epoch - skip):
        batch = list(islice(items, plan.local_batch))
        yield collate(batch) if batch else {}

