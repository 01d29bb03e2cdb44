"""The embedding job's options: one record that `embed_corpus` takes, that `tempme embed` and `tempme nightly`
turn into flags, and that the nightly crontab line spells out again, so no option can be known to one of them
and dropped by another."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.options import ClusterOptions, TrackingOptions, option, precision_option
from pipelines.shards.reader import shard_folders

PART_ROWS = 10_000   # rows per written fragment: at most this much work per writer task is lost when a run is killed


@dataclass
class EmbedOptions(ClusterOptions, TrackingOptions):
    shards: tuple[str, ...] | None = option(None, "shard folder or URI written by `tempme preprocess` (several: "
                                                  "comma-separated)", parse=shard_folders)
    out: str | None = option(None, "index directory or URI (created if missing)")
    model: str | None = option(None, "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/<path> or "
                                     "an adapter directory")
    workers: int = option(1, "most embedding actors, one model each; the pool grows to this")
    min_workers: int = option(1, "embedding actors kept from the start")
    batch_size: int = option(16, "videos per model call")
    cpus_per_worker: int = option(1, "CPUs (torch threads) per actor; the pool needs workers x this many")
    device: str = option("auto", "gpu: one GPU per actor (an autoscaling cluster adds GPU nodes); auto: GPUs "
                                 "when the cluster has them, else CPU", choices=("auto", "cpu", "gpu"))
    precision: str = precision_option()
    compile: bool = option(False, "compile each actor's video encoder once (takes a minute or two per actor; "
                                  "pays off over thousands of videos)")
    part_rows: int = option(PART_ROWS, "rows per written fragment: at most this much work per writer is lost "
                                       "when a run is killed")
    progress_every: float = option(10.0, "seconds between progress lines")
    experiment: str = option("tempme-embed", "MLflow experiment")

    def __post_init__(self):
        if isinstance(self.shards, str):          # given as the command line gives it
            self.shards = shard_folders(self.shards)
