"""Checks that need the cluster and the shards, made before any Ray Train worker starts (and is paid for).

On a cluster of several nodes, or one whose head runs no work (its workers come from an autoscaler), every
worker must reach the shards, the checkpoints and the tracking store: a local path names a different folder
on every node (unless it is a filesystem all nodes mount: `scaling.shared_filesystem`), and a SQLite file
is one machine's. On a single node that cannot grow, the workers asked for must fit in it, or the job would
wait forever. The shards must hold what the preset's encoder takes: its frame count and image size.
"""
from __future__ import annotations

import json

from pipelines.cluster.connect import spans_nodes
from pipelines.shards.format import CATALOG_DIR, OPTIONS
from pipelines.storage.location import Location, is_local_uri
from pipelines.train.config import ConfigError, TrainJobConfig


def check_fits_cluster(cfg: TrainJobConfig, tracking_uri: str, nodes: list[dict]) -> None:
    """Raise ConfigError naming the setting that cannot work on this cluster (`ray.nodes()`)."""
    if spans_nodes(nodes):
        places = [("data.shards", folder) for folder in cfg.data.shards]
        local = [] if cfg.scaling.shared_filesystem else [
            (key, value) for key, value in places + [("run.storage_path", cfg.run.storage_path)] if is_local_uri(value)]
        if local:
            key, value = local[0]
            raise ConfigError(key, f"{value} is a local path, but this Ray cluster spans several nodes, which would "
                                   "each see their own folder: use an object-store URI (s3://bucket/..., gs://...), "
                                   "or set scaling.shared_filesystem=true if every node mounts it (NFS)")
        if tracking_uri.startswith("sqlite:"):
            raise ConfigError("tracking.uri", f"{tracking_uri} is a file on one machine, but this Ray cluster spans "
                                              "several nodes: use an MLflow server (http://mlflow:5000)")
        return
    node, = [n for n in nodes if n.get("Alive")] or [{}]
    have = node.get("Resources", {})
    need = {"CPU": cfg.scaling.num_workers * cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        need["GPU"] = cfg.scaling.num_workers
    for resource, amount in need.items():
        if have.get(resource, 0) < amount:
            raise ConfigError("scaling.num_workers", f"{cfg.scaling.num_workers} workers need {amount:g} {resource}, "
                                                     f"but this single-node Ray cluster has {have.get(resource, 0):g} "
                                                     "and cannot grow: ask for fewer workers or join a larger cluster")


def check_shards_fit_model(cfg: TrainJobConfig, frames: int, image_size: int) -> None:
    """Raise ConfigError if the shards' frames or resolution (each folder's `_index/options.json`) are not
    the preset's `frames` and `image_size`."""
    for folder in cfg.data.shards:
        loc = Location.of(folder).child(CATALOG_DIR, OPTIONS)
        if not loc.exists():
            continue   # shards not made by `tempme preprocess`
        made = json.loads(loc.read_text())
        for what, have, want in (("frames", made.get("frames"), frames),
                                 ("resolution", made.get("resolution"), image_size)):
            if have is not None and have != want:
                raise ConfigError("data.shards", f"{folder} holds {what}={have}, but {cfg.model.preset} takes "
                                                 f"{what}={want}: preprocess with --{what} {want} or pick a preset "
                                                 "that fits")
