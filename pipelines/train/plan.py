"""The step plan every worker follows, computed once by the driver before any worker starts, so every rank and
every restart agrees on the step count. The driver runs on the head node: it counts the splits as their
columns stream by (`SplitCount`) and holds no row per video; each worker builds the tables it reads.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pipelines.shards.reader import SplitCount
from pipelines.storage.location import Location
from pipelines.train.config import ConfigError, TrainJobConfig


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


def _count_split(cfg: TrainJobConfig, key: str) -> SplitCount:
    split = getattr(cfg.data, key)
    try:
        count = SplitCount.count(cfg.data.shards, split, cfg.data.bad_shards)
    except FileNotFoundError:
        raise ConfigError(f"data.{key}", f"split {split!r} has no samples in {','.join(cfg.data.shards)}") from None
    except ValueError as err:
        raise ConfigError("data.shards", str(err)) from None
    if not count.pairs:
        raise ConfigError(f"data.{key}", f"split {split!r} of {','.join(cfg.data.shards)} has no captions: "
                          "training and evaluation need captioned videos (a corpus split is only embedded and "
                          "searched)")
    return count


def plan_training(cfg: TrainJobConfig) -> TrainPlan:
    """Check the shard folders and every split the config names; the steps of the whole run."""
    for folder in cfg.data.shards:
        if not Location.of(folder).exists():
            raise ConfigError("data.shards", f"no such folder {folder}")
    for key in ("eval_split", "test_split"):
        if getattr(cfg.data, key) is not None:
            _count_split(cfg, key)
    train = _count_split(cfg, "train_split")
    world = cfg.scaling.num_workers
    local = cfg.train.batch_size // world
    steps_per_epoch = math.ceil(math.ceil(train.pairs / world) / local)
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    return TrainPlan(train_pairs=train.pairs, train_videos=train.videos, local_batch=local,
                     steps_per_epoch=steps_per_epoch, total_steps=total)
