"""The evaluation job's options: one record that `evaluate_on_cluster` takes and `tempme evaluate` turns into
flags; apart from the evaluation itself, so that the command line is built without loading torch."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.options import ClusterOptions, TrackingOptions, option, precision_option
from pipelines.shards.reader import shard_folders

V2T_PROTOCOLS = ("per_video", "per_caption")   # video-to-text: other videos by their best caption, or every one
DEFAULT_V2T_PROTOCOL = V2T_PROTOCOLS[0]          # the authors'


@dataclass
class EvaluateOptions(ClusterOptions, TrackingOptions):
    model: str = option(help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/<path> or an adapter "
                             "directory")
    shards: tuple[str, ...] = option(help="shard folder written by `tempme preprocess` (several: comma-separated)",
                                     parse=shard_folders)
    split: str = option("test", "split to evaluate")
    batch_size: int = option(16, "videos per forward pass")
    device: str = option("cpu", "run on a GPU of the Ray cluster, or on its CPUs; never in the driver",
                         choices=("cpu", "gpu"))
    v2t_protocol: str = option(DEFAULT_V2T_PROTOCOL,
                               "video-to-text: other videos count once, by their best caption (the "
                                            "authors'), or with every caption", choices=V2T_PROTOCOLS)
    precision: str = precision_option()
    loader_workers: int = option(0, "decoding processes")

    def __post_init__(self):
        if isinstance(self.shards, str):          # given as the command line gives it
            self.shards = shard_folders(self.shards)
