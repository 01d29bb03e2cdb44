"""Measurements of the training job itself: throughput and memory by preset and worker count, and a learning
check on the synthetic captioned corpus. Every figure comes from a real `run_training` (Ray Train workers,
MLflow run) in a scratch folder, read back from what the job logged.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.preprocess.layout import CATALOG_DIR, SUMMARY, catalog_name, shard_name
from pipelines.shards import shard_samples

from .config import TrainJobConfig, load_config
from .job import run_training

from pipelines.train.config import TINY_CONFIG as TINY


@dataclass(frozen=True)
class ThroughputRow:
    preset: str
    workers: int
    videos_per_s: float            # steady state: the first logging window (start-up) left out
    peak_memory_mb: list[float]    # per worker


@dataclass(frozen=True)
class LearningCheck:
    preset: str
    steps: int
    seconds: float
    test_videos: int
    t2v_r1: float
    chance_r1: float
    metrics: dict[str, float]


def _config(shards: Path, workdir: Path, name: str, *overrides: str) -> TrainJobConfig:
    workdir.mkdir(parents=True, exist_ok=True)
    return load_config(TINY, [
        f"data.shards={shards}", f"run.name={name}", f"run.storage_path={workdir / 'ray'}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", "tracking.experiment=bench-train",
        "tracking.visualize_videos=0", "tracking.system_metrics=false", *overrides])


def measure_throughput(shards: Path, workdir: Path, presets: list[str], worker_counts: list[int],
                       steps: int, batch_per_worker: int) -> list[ThroughputRow]:
    """Train each preset with each worker count for `steps` steps (no evaluation) and read what was logged."""
    rows = []
    for preset in presets:
        for workers in worker_counts:
            cfg = _config(shards, workdir, f"throughput-{preset}-{workers}w", f"model.preset={preset}",
                          f"scaling.num_workers={workers}", f"train.batch_size={batch_per_worker * workers}",
                          f"train.max_steps={steps}", "train.epochs=1000", "train.log_every=2",
                          "data.eval_split=null", "data.test_split=null")
            summary = run_training(cfg).summary
            rows.append(ThroughputRow(preset, workers, summary["steady_videos_per_s"],
                                      [summary[f"peak_memory_mb_rank{r}"] for r in range(workers)]))
    return rows


def learning_check(shards: Path, workdir: Path, epochs: int, workers: int = 2) -> LearningCheck:
    """Train the tiny preset from its random weights (only LoRA and the clip positional embeddings learn)
    on the training split, no model selection, and evaluate the last model on the held-out test split."""
    import mlflow

    cfg = _config(shards, workdir, "learning-check", f"train.epochs={epochs}", f"scaling.num_workers={workers}",
                  "data.eval_split=null", "data.test_split=test")
    outcome = run_training(cfg)
    run = mlflow.MlflowClient(outcome.tracking_uri).get_run(outcome.run_id)
    seconds = (run.info.end_time - run.info.start_time) / 1000
    test_videos = len(shard_samples(str(shards), "test"))
    prefix = "final_test_"
    metrics = {k[len(prefix):]: v for k, v in outcome.summary.items() if k.startswith(prefix)}
    return LearningCheck(preset=cfg.model.preset, steps=outcome.steps, seconds=seconds, test_videos=test_videos,
                         t2v_r1=metrics["t2v_r1"], chance_r1=100.0 / test_videos, metrics=metrics)



@dataclass(frozen=True)
class MemoryRow:
    train_videos: int
    peak_memory_mb: float          # the training worker's peak (RSS on CPU), data loading in the same process
    reader_held_mb: float          # what the split's sample table and an epoch's order hold (traced allocations)


def replicate_shards(shards: Path, out: Path, videos: int) -> Path:
    """A shard folder whose training split has `videos` videos: `shards`' training tars again and again as hard
    links under new names, their ids made unique in the catalogs, other splits as they are. What grows with the
    corpus can be measured without decoding thousands of videos first."""
    (out / CATALOG_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copy(shards / SUMMARY, out / SUMMARY)
    for index_file in (shards / CATALOG_DIR).glob("*.json"):
        if not index_file.name.startswith("train-"):
            shutil.copy(index_file, out / CATALOG_DIR)
            tar = shards / index_file.name.replace(".json", ".tar")
            if tar.exists():
                os.link(tar, out / tar.name)
    train = [json.loads(f.read_text()) for f in sorted((shards / CATALOG_DIR).glob("train-*.json"))]
    made, number = 0, 0
    while made < videos:
        for index in train:
            samples = index["samples"][: videos - made]
            if not samples:
                break
            name = shard_name("train", number)
            os.link(shards / index["shard"], out / name)
            copy = {**index, "shard": name, "planned": [],
                    "samples": [{**s, "id": f"{s['id']}-{number}"} for s in samples]}
            (out / CATALOG_DIR / catalog_name(name)).write_text(json.dumps(copy))
            made, number = made + len(samples), number + 1
    return out


def measure_memory(shards: Path, workdir: Path, video_counts: list[int], steps: int) -> list[MemoryRow]:
    """Peak memory of one training worker (tiny TempMe, data loading in its process) on training splits of
    each size: what the reader keeps per video shows as growth from the smallest to the largest."""
    rows = []
    for videos in video_counts:
        grown = replicate_shards(shards, workdir / f"shards-{videos}", videos)
        cfg = _config(grown, workdir, f"memory-{videos}", "scaling.num_workers=1", "train.batch_size=4",
                      f"train.max_steps={steps}", "train.epochs=1", "train.log_every=2", "data.loader_workers=0",
                      "data.eval_split=null", "data.test_split=null")
        rows.append(MemoryRow(videos, run_training(cfg).summary["peak_memory_mb_rank0"], reader_held_mb(grown)))
    return rows


def reader_held_mb(shards: Path) -> float:
    """MiB the training split's sample table and one epoch's order keep allocated (Python and Arrow)."""
    import gc
    import tracemalloc

    import pyarrow as pa

    from pipelines.shards import SampleTable
    from pipelines.stream import ShardStream

    ShardStream(SampleTable.build(str(shards), "train"), batch_size=4).order()   # first use: caches, not the table
    gc.collect()
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        stream = ShardStream(SampleTable.build(str(shards), "train"), batch_size=4)
        order = stream.order()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - arrow_before
    finally:
        tracemalloc.stop()
    del stream, order
    return round(held / 2**20, 2)
