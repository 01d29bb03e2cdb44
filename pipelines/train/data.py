"""What each worker reads: the splits' sample tables and this rank's batches of an epoch.

Every rank reads its own contiguous part of the epoch's (video, caption) pairs (`pipelines.shards.stream`: tars in
shuffled order, pairs shuffled within windows of `data.shuffle_window` videos; parts differ by at most one).
An epoch covers every pair once: it lasts as many steps as the largest part needs (`plan.TrainPlan`), so near the
end a rank may contribute a smaller batch, or none; the loss gathers whatever the ranks have. Each worker builds
the splits' sample tables once (`Splits`) and keeps them for all its epochs and evaluations.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pipelines.shards.reader import SampleTable
from pipelines.shards.stream import ShardStream, stream_batches
from pipelines.train.config import TrainJobConfig
from pipelines.train.plan import TrainPlan


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
