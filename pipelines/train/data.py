"""What each worker reads, and the step plan every worker follows.

Every rank reads its own contiguous part of the epoch's (video, caption) pairs (`pipelines.shards.stream`: tars in
shuffled order, pairs shuffled within windows of `data.shuffle_window` videos; parts differ by at most one).
An epoch covers every pair once: it lasts as many steps as the largest part needs, so near the end a rank
may contribute a smaller batch, or none; the loss gathers whatever the ranks have. The plan is computed once,
before any worker starts, so every rank and every restart agrees on the step count. Each worker builds the
splits' sample tables once (`Splits`) and keeps them for all its epochs and evaluations.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from pipelines.shards.reader import SampleTable
from pipelines.shards.stream import ShardStream, stream_batches
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


def _split_table(cfg: TrainJobConfig, key: str) -> SampleTable:
    split = getattr(cfg.data, key)
    try:
        table = SampleTable.build(cfg.data.shards, split, cfg.data.bad_shards)
    except FileNotFoundError:
        raise ConfigError(f"data.{key}", f"split {split!r} has no samples in {','.join(cfg.data.shards)}") from None
    except ValueError as err:
        raise ConfigError("data.shards", str(err)) from None
    if not table.pairs:
        raise ConfigError(f"data.{key}", f"split {split!r} of {','.join(cfg.data.shards)} has no captions: "
                          "training and evaluation need captioned videos (a corpus split is only embedded and "
                          "searched)")
    return table


def plan_training(cfg: TrainJobConfig) -> TrainPlan:
    """Check the shard folders and every split the config names; the steps of the whole run."""
    for folder in cfg.data.shards:
        if not Location.of(folder).exists():
            raise ConfigError("data.shards", f"no such folder {folder}")
    for key in ("eval_split", "test_split"):
        if getattr(cfg.data, key) is not None:
            _split_table(cfg, key)
    train = _split_table(cfg, "train_split")
    world = cfg.scaling.num_workers
    local = cfg.train.batch_size // world
    steps_per_epoch = math.ceil(math.ceil(train.pairs / world) / local)
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    return TrainPlan(train_pairs=train.pairs, train_videos=len(train), local_batch=local,
                     steps_per_epoch=steps_per_epoch, total_steps=total)


@dataclass
class Splits:
    """The sample tables of the splits one worker reads, each built once."""

    cfg: TrainJobConfig
    tables: dict[str, SampleTable] = field(default_factory=dict)

    def __getitem__(self, split: str) -> SampleTable:
        if split not in self.tables:
            self.tables[split] = SampleTable.build(self.cfg.data.shards, split, self.cfg.data.bad_shards)
        return self.tables[split]


def train_batches(cfg: TrainJobConfig, plan: TrainPlan, table: SampleTable, rank: int, world: int, epoch: int,
                  skip: int = 0, pin_memory: bool = False) -> Iterator[dict]:
    """This rank's batches of `epoch` after the first `skip`: exactly `steps_per_epoch - skip` of them.

    A batch is `pipelines.shards.stream`'s dict (video uint8, mask, caption, id); an empty dict once this rank's part
    of the epoch is used up. The order is fixed by (seed, epoch), so skipping (after a restart) continues
    where the interrupted run was, without reading or decoding the skipped items.
    """
    stream = ShardStream(table, batch_size=plan.local_batch, mode="pairs", rank=rank, world_size=world,
                         lanes=max(cfg.data.loader_workers, 1), augment=cfg.data.augment, seed=cfg.train.seed,
                         epoch=epoch, skip=skip, window=cfg.data.shuffle_window, skip_corrupt=True)
    batches = stream_batches(stream, pin_memory, workers=cfg.data.loader_workers)
    for _ in range(plan.steps_per_epoch - skip):
        yield next(batches, {})
