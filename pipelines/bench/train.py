"""Training throughput (videos/s) and peak memory per worker with 1 and 2 CPU workers, tempme vs lora, and a
learning check on the synthetic captioned corpus. Every figure comes from a real `run_training` (Ray Train
workers, MLflow run) in the scratch folder, read back from what the job logged."""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.bench import common
from pipelines.storage.location import Location

WORKDIR = "the synthetic corpus and the runs"
EXAMPLE = "tempme bench train --workers 1,2 --steps 12 --learn"


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


@dataclass(frozen=True)
class MemoryRow:
    train_videos: int
    peak_memory_mb: float          # the training worker's peak (RSS on CPU), data loading in the same process
    reader_held_mb: float          # what the split's sample table and an epoch's order hold (traced allocations)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="shard folder to train on (default: a synthetic corpus made here)")
    parser.add_argument("--presets", default="tempme-tiny-12f,lora-tiny-12f", help="comma-separated presets")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement")
    parser.add_argument("--batch-per-worker", type=int, default=4, help="pairs per worker per step")
    parser.add_argument("--learn", action="store_true",
                        help="also run the learning check: tiny model, synthetic corpus, held-out test R@1 vs chance")
    parser.add_argument("--videos", type=int, default=64, help="videos of the synthetic corpus made when no --shards")
    parser.add_argument("--learn-epochs", type=int, default=12, help="epochs of the learning check")
    parser.add_argument("--memory-videos", default="1000,10000",
                        help="training-split sizes at which a worker's peak memory is measured (hard-linked copies "
                             "of the corpus' shards; empty: skip)")


def measure(args) -> dict:
    from pipelines.demo.synthetic import make_synthetic_shards

    presets = common.names(args.presets, "--presets")
    worker_counts = common.numbers(args.workers, "--workers")
    memory_counts = common.numbers(args.memory_videos, "--memory-videos", least=0)
    with common.scratch(args) as workdir:
        common.start_ray()
        shards = Path(args.shards) if args.shards else make_synthetic_shards(workdir / "synthetic", args.videos)
        rows = measure_throughput(shards, workdir / "throughput", presets, worker_counts, args.steps,
                                  args.batch_per_worker)
        memory = measure_memory(shards, workdir / "memory", memory_counts, args.steps) if memory_counts else []
        check = learning_check(shards, workdir / "learning", args.learn_epochs) if args.learn else None
    return {"steps": args.steps, "batch_per_worker": args.batch_per_worker, "presets": presets,
            "workers": worker_counts, "throughput": [asdict(r) for r in rows], "memory": [asdict(m) for m in memory],
            "learning_check": asdict(check) if check else None}


def render(result: dict) -> str:
    last, base = result["presets"][-1], result["workers"][0]
    rate = {(r["preset"], r["workers"]): r["videos_per_s"] for r in result["throughput"]}
    rows = [[r["preset"], r["workers"], f"{r['videos_per_s']:.2f}",
             f"{r['videos_per_s'] / rate[(last, r['workers'])]:.2f}x",
             f"{r['videos_per_s'] / rate[(r['preset'], base)]:.2f}x",
             ", ".join(f"{m:.0f}" for m in r["peak_memory_mb"])] for r in result["throughput"]]
    lines = [f"training throughput, {result['steps']} steps of {result['batch_per_worker']} pairs per worker, CPU "
             f"(steady state; first logging window left out)",
             common.table(["preset", "workers", "videos/s", f"vs {last.split('-')[0]}",
                           f"vs {base} worker" + ("s" if base > 1 else ""), "peak MB per worker"], rows)]
    memory = result["memory"]
    if memory:
        lines.append("\npeak memory of one training worker (tiny TempMe, data loading in its process) by "
                     "training-split size")
        first = memory[0]
        lines.append(common.table(["videos", "peak MB", f"vs {first['train_videos']}", "reader holds MiB"],
                                  [[m["train_videos"], f"{m['peak_memory_mb']:.0f}",
                                    f"{m['peak_memory_mb'] - first['peak_memory_mb']:+.0f}",
                                    f"{m['reader_held_mb']:.2f}"] for m in memory], left=0))
    check = result["learning_check"]
    if check:
        metrics = check["metrics"]
        lines.append(f"\nlearning check: {check['preset']} from random weights, {check['steps']} steps in "
                     f"{check['seconds']:.0f} s; held-out test split of {check['test_videos']} videos\n"
                     f"  text-to-video R@1 {check['t2v_r1']:.1f}% (chance {check['chance_r1']:.1f}%), "
                     f"R@5 {metrics['t2v_r5']:.1f}%, video-to-text R@1 {metrics['v2t_r1']:.1f}%, "
                     f"t2v median rank {metrics['t2v_medr']:.1f}")
    return "\n".join(lines)


def _config(shards: Path, workdir: Path, name: str, *overrides: str):
    """The tiny training config, tracked in a SQLite MLflow store under `workdir`, with `overrides`."""
    from pipelines.train.config import TINY_CONFIG, load_config

    workdir.mkdir(parents=True, exist_ok=True)
    return load_config(TINY_CONFIG, [
        f"data.shards={shards}", f"run.name={name}", f"run.storage_path={workdir / 'ray'}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", "tracking.experiment=bench-train",
        "tracking.visualize_videos=0", "tracking.system_metrics=false", *overrides])


def measure_throughput(shards: Path, workdir: Path, presets: list[str], worker_counts: list[int],
                       steps: int, batch_per_worker: int) -> list[ThroughputRow]:
    """Train each preset with each worker count for `steps` steps (no evaluation) and read what was logged."""
    from pipelines.train.job import run_training

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

    from pipelines.shards.reader import SampleTable
    from pipelines.train.job import run_training

    cfg = _config(shards, workdir, "learning-check", f"train.epochs={epochs}", f"scaling.num_workers={workers}",
                  "data.eval_split=null", "data.test_split=test")
    outcome = run_training(cfg)
    run = mlflow.MlflowClient(outcome.tracking_uri).get_run(outcome.run_id)
    seconds = (run.info.end_time - run.info.start_time) / 1000
    test_videos = len(SampleTable.build([str(shards)], "test"))
    prefix = "final_test_"
    metrics = {k[len(prefix):]: v for k, v in outcome.summary.items() if k.startswith(prefix)}
    return LearningCheck(preset=cfg.model.preset, steps=outcome.steps, seconds=seconds, test_videos=test_videos,
                         t2v_r1=metrics["t2v_r1"], chance_r1=100.0 / test_videos, metrics=metrics)


def replicate_shards(shards: Path, out: Path, videos: int) -> Path:
    """A shard folder whose training split has `videos` videos: `shards`' training tars again and again as hard
    links under new names, their ids made unique in the sample table, other splits as they are. What grows with
    the corpus can be measured without decoding thousands of videos first."""
    import lance

    from pipelines.shards.format import SAMPLES, SUMMARY, sample_table, shard_name

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shards / SUMMARY, out / SUMMARY)
    rows = sample_table(Location.of(shards)).to_table()
    for tar in shards.glob("*.tar"):
        if not tar.name.startswith("train-"):
            os.link(tar, out / tar.name)
    others = rows.filter(pc.not_equal(rows["split"], "train"))
    train = rows.filter(pc.equal(rows["split"], "train"))
    parts, made, number = [others], 0, 0
    while made < videos:
        for shard in sorted(set(train["shard"].to_pylist())):
            part = train.filter(pc.equal(train["shard"], shard)).slice(0, videos - made)
            if not part.num_rows:
                break
            name = shard_name("train", number)
            os.link(shards / shard, out / name)
            parts.append(part.set_column(0, "id", pc.binary_join_element_wise(part["id"], f"-{number}", ""))
                         .set_column(2, "shard", pa.array([name] * part.num_rows)))
            made, number = made + part.num_rows, number + 1
    lance.write_dataset(pa.concat_tables(parts), str(out / SAMPLES))
    return out


def measure_memory(shards: Path, workdir: Path, video_counts: list[int], steps: int) -> list[MemoryRow]:
    """Peak memory of one training worker (tiny TempMe, data loading in its process) on training splits of
    each size: what the reader keeps per video shows as growth from the smallest to the largest."""
    from pipelines.train.job import run_training

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

    from pipelines.shards.reader import SampleTable
    from pipelines.shards.stream import ShardStream

    ShardStream(SampleTable.build([str(shards)], "train"), batch_size=4).order()   # first use: caches, not the table
    gc.collect()
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        stream = ShardStream(SampleTable.build([str(shards)], "train"), batch_size=4)
        order = stream.order()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes() - arrow_before
    finally:
        tracemalloc.stop()
    del stream, order
    return round(held / 2**20, 2)
