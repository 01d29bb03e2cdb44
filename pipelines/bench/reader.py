"""Shard reader throughput: videos/s delivered as uint8 batches, from the shards' own store and from a local
copy side by side (the object-store cost), with 1 and 2 DataLoader workers, measured in one run."""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass

from pyarrow import fs as pafs

from pipelines.bench import common
from pipelines.storage.location import Location, is_local_uri

WORKDIR = "the generated corpus and the local copy of the shards"
EXAMPLE = "tempme bench reader --shards s3://bucket/shards --json"


@dataclass(frozen=True)
class ReaderRow:
    source: str               # "as given" or "local copy"
    shards: str
    workers: int              # DataLoader processes (one lane each)
    augment: bool
    videos_per_s: float


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


def measure(args) -> dict:
    import torch

    from pipelines.demo.synthetic import make_synthetic_shards

    worker_counts = common.numbers(args.workers, "--workers")
    torch.set_num_threads(1)   # DataLoader workers use one thread each; so does the main process here
    with common.scratch(args) as scratch:
        if args.shards:
            shards = args.shards
        else:
            import ray

            shards = str(make_synthetic_shards(scratch, args.videos, samples_per_shard=8))
            ray.shutdown()     # the decoders' cluster would otherwise hold cores while the reader is measured
        sources = [("as given", shards)]
        if not args.no_local_copy and not is_local_uri(shards):
            sources.append(("local copy", local_copy(shards, str(scratch / "local"))))
        rows = measure_sources(sources, args.split, worker_counts, args.batch_size, args.epochs, args.augment)
    by = {(r.source, r.workers): r.videos_per_s for r in rows}
    ratios = {f"{w}_workers": by[("as given", w)] / by[("local copy", w)]
              for w in {r.workers for r in rows} if ("local copy", w) in by and by[("local copy", w)]}
    return {"shards": shards, "split": args.split, "rows": [asdict(r) for r in rows], "given_over_local": ratios}


def render(result: dict) -> str:
    rows = [[r["source"], r["workers"], f"{r['videos_per_s']:.1f}"] for r in result["rows"]]
    return "\n".join([f"reader benchmark: {result['shards']} split {result['split']}",
                      common.table(["source", "workers", "videos/s"], rows)]
                     + [f"as given / local copy, {name.replace('_', ' ')}: {ratio:.2f}x"
                        for name, ratio in sorted(result["given_over_local"].items())])


def videos_per_second(table, workers: int, batch_size: int, epochs: int, augment: bool) -> float:
    """Decoded training items (one video each) per second over `epochs` epochs of (video, caption) pairs of the
    SampleTable `table`, in steady state: each epoch's first batch (workers starting, first window read) is not
    counted."""
    from pipelines.shards.stream import ShardStream, stream_batches

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
    source = Location.of(shards)
    pafs.copy_files(source.path, into, source_filesystem=source.fs, destination_filesystem=pafs.LocalFileSystem())
    return into


def measure_sources(sources: list[tuple[str, str]], split: str, worker_counts: list[int], batch_size: int,
                    epochs: int, augment: bool) -> list[ReaderRow]:
    """Each (label, shards) source at each worker count, interleaved so that both see the same machine."""
    from pipelines.shards.reader import SampleTable

    tables = {label: SampleTable.build([shards], split) for label, shards in sources}
    return [ReaderRow(label, shards, workers, augment,
                      videos_per_second(tables[label], workers, batch_size, epochs, augment))
            for workers in worker_counts for label, shards in sources]
