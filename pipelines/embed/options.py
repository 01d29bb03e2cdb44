"""The embedding job's options: one record that `embed_corpus` takes as keywords, that `tempme embed` and
`tempme nightly` turn into flags, and that the nightly crontab line spells out again, so no option can be
known to one of them and dropped by another."""
from __future__ import annotations

from dataclasses import dataclass, field

from tempme.config import PRECISIONS

PART_ROWS = 10_000   # rows per written fragment: at most this much work per writer task is lost when a run is killed


def _option(default, help: str, **flag):
    """A field with its command-line help (and argparse extras such as `choices`) as metadata."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class EmbedOptions:
    shards: str = _option(None, "shard directory or URI written by `tempme preprocess`")
    out: str = _option(None, "index directory or URI (created if missing)")
    model: str = _option(None, "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/<path> or an "
                               "adapter directory")
    workers: int = _option(1, "most embedding actors, one model each; the pool grows to this")
    min_workers: int = _option(1, "embedding actors kept from the start")
    batch_size: int = _option(16, "videos per model call")
    cpus_per_worker: int = _option(1, "CPUs (torch threads) per actor; the pool needs workers x this many")
    device: str = _option("auto", "gpu: one GPU per actor (an autoscaling cluster adds GPU nodes); auto: GPUs "
                                  "when the cluster has them, else CPU", choices=("auto", "cpu", "gpu"))
    precision: str = _option("auto", "inference precision; auto: bf16 where the CPU or GPU computes it natively",
                             choices=PRECISIONS)
    compile: bool = _option(False, "compile each actor's video encoder once (takes a minute or two per actor; "
                                   "pays off over thousands of videos)")
    part_rows: int = _option(PART_ROWS, "rows per written fragment: at most this much work per writer is lost "
                                        "when a run is killed")
    progress_every: float = _option(10.0, "seconds between progress lines")
    ray_address: str | None = _option(None, "Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    tracking_uri: str | None = _option(None, "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    experiment: str = _option("tempme-embed", "MLflow experiment")
