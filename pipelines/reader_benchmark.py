"""How fast the shard reader turns shards into model-ready tensors (`tempme bench reader`)."""
from __future__ import annotations

import time

from torch.utils.data import DataLoader, IterableDataset

from pipelines.shards import ShardDataset, collate


class _Epochs(IterableDataset):
    """`epochs` passes over a ShardDataset, each reshuffled as a training loop would."""

    def __init__(self, dataset: ShardDataset, epochs: int):
        self.dataset, self.epochs = dataset, epochs

    def __iter__(self):
        for epoch in range(self.epochs):
            self.dataset.set_epoch(epoch)
            yield from self.dataset


def videos_per_second(shards: str, split: str, augment: bool, loader_workers: int, batch_size: int,
                      epochs: int) -> float:
    """Whole videos ([T,3,H,W] normalised + mask) per second through one DataLoader over `epochs` epochs,
    in steady state: the first batch (workers starting) is not counted."""
    dataset = ShardDataset(shards, split, mode="videos", augment=augment, shuffle=True)
    loader = iter(DataLoader(_Epochs(dataset, epochs), batch_size=batch_size, num_workers=loader_workers,
                             collate_fn=collate))
    next(loader)
    started = time.perf_counter()
    done = sum(len(batch["id"]) for batch in loader)
    return done / (time.perf_counter() - started)
