"""How fast the streaming reader turns shards into uint8 batches (`tempme bench reader`), from where the shards
are and from a local copy of them, measured side by side in one run."""
from __future__ import annotations

import time
from dataclasses import dataclass

from pyarrow import fs as pafs

from pipelines.shards import SampleTable, shard_folders
from pipelines.storage import Location
from pipelines.stream import ShardStream, stream_batches


@dataclass(frozen=True)
class ReaderRow:
    source: str               # "as given" or "local copy"
    shards: str
    workers: int              # DataLoader processes (one lane each)
    augment: bool
    videos_per_s: float


def videos_per_second(table: SampleTable, workers: int, batch_size: int, epochs: int, augment: bool) -> float:
    """Decoded training items (one video each) per second over `epochs` epochs of (video, caption) pairs, in
    steady state: each epoch's first batch (workers starting, first window read) is not counted."""
    done, seconds = 0, 0.0
    for epoch in range(epochs):
        stream = ShardStream(table, batch_size=batch_size, lanes=max(workers, 1), augment=augment, epoch=epoch)
        batches = stream_batches(stream, workers=workers)
        next(batches, None)
        started = time.perf_counter()
        done += sum(len(b["id"]) for b in batches)
        seconds += time.perf_counter() - started
    return done / seconds if seconds else 0.0


def local_copy(shards: str, into: str) -> str:
    """The shard folder copied to the local folder `into` (indexes, summary and removals with it)."""
    source = Location.of(shard_folders(shards)[0])
    pafs.copy_files(source.path, into, source_filesystem=source.fs, destination_filesystem=pafs.LocalFileSystem())
    return into


def measure(sources: list[tuple[str, str]], split: str, worker_counts: list[int], batch_size: int, epochs: int,
            augment: bool) -> list[ReaderRow]:
    """Each (label, shards) source at each worker count, interleaved so that both see the same machine."""
    tables = {label: SampleTable.build(shards, split) for label, shards in sources}
    return [ReaderRow(label, shards, workers, augment,
                      videos_per_second(tables[label], workers, batch_size, epochs, augment))
            for workers in worker_counts for label, shards in sources]
