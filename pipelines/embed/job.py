"""The embedding job: shards + model URI -> index, incremental per model version, safe to kill at any time.

1. Resolve the model URI to a pinned version (driver, once) and read the shard indexes (no tar scans).
2. Take the index's writer lock; what the live manifest (same version) or a killed run's committed parts
   already hold is done; everything else is to do.
3. Ray Data: one row per video to do -> `map_batches` over an actor pool (one model per actor; a GPU each
   when the cluster has GPUs, else CPU threads) -> rows stream back to the driver, which commits parts.
4. Publish: one pointer swap makes the new generation live. Log counts and speed to MLflow.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.embed.encoder import VideoEmbedder, sample_row
from pipelines.embed.model import adapter_files, resolve
from pipelines.index import PART_ROWS, IndexStore, Manifest, ModelRef
from pipelines.shards import IndexedSample, read_summary, shard_index

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


class EmbedError(RuntimeError):
    pass


@dataclass
class EmbedReport:
    model: ModelRef
    location: str
    videos: int               # distinct videos in the shards
    already_done: int         # in the live index for this model version, or adopted from a killed run
    embedded: int             # embedded by this run
    failed: int
    seconds: float            # embedding stage only (Ray pipeline start to last row written)
    manifest: Manifest | None
    mlflow_run_id: str | None = None

    @property
    def videos_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        live = f"generation {self.manifest.generation}, {self.manifest.count} videos" if self.manifest else "empty"
        return (f"{self.location}: {live}; model {self.model.name} v{self.model.version}\n"
                f"  {self.videos} videos in the shards: {self.already_done} already embedded, {self.embedded} "
                f"embedded now ({self.videos_per_s:.1f} videos/s), {self.failed} failed")


def list_samples(shards: str) -> list[IndexedSample]:
    """Every finished sample of every split, each video id once (the first occurrence)."""
    try:
        splits = list(read_summary(shards).get("splits", {})) or list(SPLITS)
    except (FileNotFoundError, OSError, ValueError):
        splits = list(SPLITS)
    samples, seen = [], set()
    for split in splits:
        try:
            found = shard_index(shards, split)
        except FileNotFoundError:
            continue
        for s in found:
            if s.id not in seen:
                seen.add(s.id)
                samples.append(s)
    if not samples:
        raise EmbedError(f"{shards}: no finished shards (is it the output folder of `tempme preprocess`?)")
    return samples


def _actor_resources(ray, device: str, cpus_per_worker: int) -> tuple[int, int]:
    """(num_cpus, num_gpus) per actor: one GPU each when asked for or present, and its CPU share."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "gpu" and gpus < 1:
        raise EmbedError("--device gpu, but the Ray cluster has no GPUs")
    return cpus_per_worker, int(device == "gpu" or (device == "auto" and gpus >= 1))


def _pipeline(ray, todo: list[IndexedSample], adapter: dict[str, bytes], workers: int, batch_size: int,
              device: str, cpus_per_worker: int):
    """Rows of the videos to embed, one block per model batch, through a fixed pool of `workers` actors."""
    num_cpus, num_gpus = _actor_resources(ray, device, cpus_per_worker)
    blocks = max(1, min(math.ceil(len(todo) / batch_size), 10_000))
    ds = ray.data.from_items([sample_row(s) for s in todo], override_num_blocks=blocks)
    return ds.map_batches(
        VideoEmbedder,
        fn_constructor_kwargs={"adapter": adapter, "threads": cpus_per_worker, "use_gpu": num_gpus > 0},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
        num_cpus=num_cpus, num_gpus=num_gpus)


class _MlflowRun:
    """One MLflow run per model version and attempt: a re-run after a kill or a failure continues the run
    that was left unfinished; after a finished run, the next night starts a new one."""

    def __init__(self, tracking_uri: str | None, experiment: str, model: ModelRef, location: str):
        from pipelines import tracking

        self.uri = tracking.resolve_tracking_uri(tracking_uri)
        tracking.check_reachable(self.uri)
        import mlflow

        self.client = mlflow.MlflowClient(self.uri)
        experiment_id = tracking.get_or_create_experiment(experiment, self.uri)
        name = f"embed {model.name} v{model.version}"
        previous = tracking.find_run(name, experiment_id, self.uri)
        self.resumed = bool(previous) and self.client.get_run(previous).info.status != "FINISHED"
        if self.resumed:
            self.run_id = previous
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
            self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
                "model_uri": model.uri, "model_name": model.name, "model_version": model.version,
                "index": location}.items()])

    def failed(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")

    def finish(self, report: EmbedReport, options: dict) -> None:
        import mlflow

        now = int(time.time() * 1000)
        metrics = {"videos": report.videos, "already_done": report.already_done, "embedded": report.embedded,
                   "failed": report.failed, "seconds": report.seconds, "videos_per_s": report.videos_per_s,
                   "index_videos": report.manifest.count if report.manifest else 0}
        self.client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(k, float(v), now, 0)
                                                    for k, v in metrics.items()],
                              tags=[mlflow.entities.RunTag(k, str(v)) for k, v in {
                                  **options, "index_location": report.location,
                                  "index_generation": report.manifest.generation if report.manifest else ""}.items()])
        if report.manifest:
            self.client.log_text(self.run_id, report.manifest.to_json(), "index_manifest.json")
        self.client.set_terminated(self.run_id, "FINISHED")


def embed_corpus(shards: str, model_uri: str, out: str, *, workers: int = 1, batch_size: int = 16,
                 device: str = "auto", cpus_per_worker: int = 1, ray_address: str | None = None,
                 tracking_uri: str | None = None, experiment: str = "tempme-embed", part_rows: int = PART_ROWS,
                 progress: Callable[[int, int], None] | None = None) -> EmbedReport:
    """Embed the videos of `shards` that `out` does not hold yet for this model version; publish atomically."""
    import ray

    if workers < 1 or batch_size < 1 or cpus_per_worker < 1:
        raise ValueError(f"workers, batch_size and cpus_per_worker must be at least 1 "
                         f"(got {workers}, {batch_size}, {cpus_per_worker})")
    model, adapter_dir = resolve(model_uri, tracking_uri)
    samples = list_samples(shards)
    run = _MlflowRun(tracking_uri, experiment, model, str(out))
    try:
        if not ray.is_initialized():
            ray.init(address=ray_address)
        report = _embed(ray, samples, model, adapter_dir, str(out), run.run_id, workers, batch_size, device,
                        cpus_per_worker, part_rows, progress)
    except BaseException:
        run.failed()
        raise
    report.mlflow_run_id = run.run_id
    run.finish(report, {"workers": workers, "batch_size": batch_size, "device": device,
                        "cpus_per_worker": cpus_per_worker, "shards": shards})
    return report


def _embed(ray, samples, model, adapter_dir, out, run_id, workers, batch_size, device, cpus_per_worker,
           part_rows, progress) -> EmbedReport:
    with IndexStore(out).writer(model, run_id=run_id[:12], part_rows=part_rows) as writer:
        todo = [s for s in samples if s.id not in writer.done_ids]
        log.info("%s: %d videos, %d to embed with %s v%s", out, len(samples), len(todo), model.name, model.version)
        embedded = failed = 0
        start = time.perf_counter()
        if todo:
            pipeline = _pipeline(ray, todo, adapter_files(adapter_dir), workers, batch_size, device, cpus_per_worker)
            for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy"):
                good = [i for i, e in enumerate(batch["error"]) if not e]
                embedded += writer.add([str(batch["video_id"][i]) for i in good], batch["embedding"][good])
                for i, e in enumerate(batch["error"]):
                    if e:
                        writer.fail(str(batch["video_id"][i]), str(e), source=str(batch["source"][i]))
                        failed += 1
                if progress:
                    progress(embedded + failed, len(todo))
        manifest = writer.publish()
        return EmbedReport(model, out, len(samples), len(samples) - len(todo), embedded, failed,
                           time.perf_counter() - start, manifest)
