"""The embedding job: shards + model URI -> index, incremental per model version, safe to kill at any time.

1. Check the MLflow store answers, resolve the model URI to a pinned version (driver, once) and read the
   shard indexes (no tar scans).
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

from pipelines import tracking
from pipelines.embed.encoder import VideoEmbedder, sample_row
from pipelines.embed.model import adapter_files, resolve
from pipelines.index import PART_ROWS, IndexStore, Manifest, ModelRef
from pipelines.preprocess.sources import KNOWN_SPLITS
from pipelines.progress import Progress
from pipelines.shards import IndexedSample, read_summary, shard_index
from tempme.precision import PRECISIONS

logger = logging.getLogger(__name__)


class EmbedError(RuntimeError):
    pass


@dataclass
class EmbedReport:
    model: ModelRef
    location: str
    videos: int               # distinct videos in the shards
    already_done: int         # in the live index for this model version, or adopted from a killed run
    adopted: int              # of those, the ones a killed run had committed but not published
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
        adopted = f" ({self.adopted} from an interrupted run)" if self.adopted else ""
        return (f"{self.location}: {live}; model {self.model.name} v{self.model.version}\n"
                f"  {self.videos} videos in the shards: {self.already_done} already embedded{adopted}, "
                f"{self.embedded} embedded now ({self.videos_per_s:.1f} videos/s), {self.failed} failed")


def list_samples(shards: str) -> list[IndexedSample]:
    """Every finished sample of every split, each video id once (the first occurrence)."""
    try:
        splits = list(read_summary(shards).get("splits", {})) or list(KNOWN_SPLITS)
    except (FileNotFoundError, OSError, ValueError):
        splits = list(KNOWN_SPLITS)
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
              device: str, cpus_per_worker: int, precision: str, compile: bool):
    """Rows of the videos to embed, one block per model batch, through a fixed pool of `workers` actors."""
    num_cpus, num_gpus = _actor_resources(ray, device, cpus_per_worker)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False   # the job prints its own progress
    blocks = max(1, min(math.ceil(len(todo) / batch_size), 10_000))
    ds = ray.data.from_items([sample_row(s) for s in todo], override_num_blocks=blocks)
    return ds.map_batches(
        VideoEmbedder,
        fn_constructor_kwargs={"adapter": adapter, "threads": cpus_per_worker, "use_gpu": num_gpus > 0,
                               "precision": precision, "compile_batch": batch_size if compile else None},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
        num_cpus=num_cpus, num_gpus=num_gpus)


def _start_run(uri: str, experiment: str, model: ModelRef, location: str) -> str:
    """One MLflow run per model version and attempt: a re-run after a kill or a failure continues the run
    that was left unfinished; after a finished run, the next night starts a new one."""
    import mlflow

    run_id, resumed = tracking.start_or_resume_run(f"embed {model.name} v{model.version}", experiment, uri,
                                                   resume_finished=False)
    client = mlflow.MlflowClient(uri)
    if resumed:
        client.update_run(run_id, status="RUNNING")
    else:
        client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
            "model_uri": model.uri, "model_name": model.name, "model_version": model.version,
            "index": location}.items()])
    return run_id


def _finish_run(uri: str, run_id: str, report: EmbedReport, options: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(uri)
    now = int(time.time() * 1000)
    metrics = {"videos": report.videos, "already_done": report.already_done, "adopted": report.adopted,
               "embedded": report.embedded, "failed": report.failed, "seconds": report.seconds,
               "videos_per_s": report.videos_per_s, "index_videos": report.manifest.count if report.manifest else 0}
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[mlflow.entities.RunTag(k, str(v)) for k, v in {
                         **options, "index_location": report.location,
                         "index_generation": report.manifest.generation if report.manifest else ""}.items()])
    if report.manifest:
        client.log_text(run_id, report.manifest.to_json(), "index_manifest.json")
    client.set_terminated(run_id, "FINISHED")


def embed_corpus(shards: str, model_uri: str, out: str, *, workers: int = 1, batch_size: int = 16,
                 device: str = "auto", precision: str = "auto", compile: bool = False,
                 cpus_per_worker: int = 1, ray_address: str | None = None,
                 tracking_uri: str | None = None, experiment: str = "tempme-embed", part_rows: int = PART_ROWS,
                 progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None,
                 progress_every: float = 10.0) -> EmbedReport:
    """Embed the videos of `shards` that `out` does not hold yet for this model version; publish atomically.

    `log` gets a line when embedding starts and then at most every `progress_every` seconds (videos done,
    failed, videos/s); `progress(done, total)` is called after every batch. `precision` is the actors'
    inference precision (`auto`: bf16 where the hardware computes it natively); `compile` compiles each
    actor's video encoder once for the batch size. A tracking store that does not
    answer (`tracking.TrackingUnavailable`) or a model it does not hold (ValueError) is found before anything
    is written."""
    import mlflow
    import ray

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if workers < 1 or batch_size < 1 or cpus_per_worker < 1:
        raise ValueError(f"workers, batch_size and cpus_per_worker must be at least 1 "
                         f"(got {workers}, {batch_size}, {cpus_per_worker})")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri)
    model, adapter_dir = resolve(model_uri, uri)
    samples = list_samples(shards)
    run_id = _start_run(uri, experiment, model, str(out))
    try:
        if not ray.is_initialized():
            ray.init(address=ray_address)
        report = _embed(ray, samples, model, adapter_dir, str(out), run_id, workers, batch_size, device,
                        cpus_per_worker, precision, compile, part_rows, progress, log or logger.info,
                        progress_every)
    except BaseException:
        mlflow.MlflowClient(uri).set_terminated(run_id, "FAILED")
        raise
    report.mlflow_run_id = run_id
    _finish_run(uri, run_id, report, {"workers": workers, "batch_size": batch_size, "device": device,
                                      "precision": precision, "compile": compile,
                                      "cpus_per_worker": cpus_per_worker, "shards": shards})
    return report


def _embed(ray, samples, model, adapter_dir, out, run_id, workers, batch_size, device, cpus_per_worker,
           precision, compile, part_rows, progress, log, progress_every) -> EmbedReport:
    with IndexStore(out).writer(model, run_id=run_id[:12], part_rows=part_rows) as writer:
        todo = [s for s in samples if s.id not in writer.done_ids]
        adopted = writer.adopted_count
        log(f"embed: {len(samples)} videos in the shards, {len(samples) - len(todo)} already in {out}, "
            f"{len(todo)} to embed with {model.name} v{model.version}")
        counter = Progress("embed", len(todo), progress_every, log)
        embedded = 0
        start = time.perf_counter()
        if todo:
            pipeline = _pipeline(ray, todo, adapter_files(adapter_dir), workers, batch_size, device, cpus_per_worker,
                                 precision, compile)
            for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy"):
                good = [i for i, e in enumerate(batch["error"]) if not e]
                embedded += writer.add([str(batch["video_id"][i]) for i in good], batch["embedding"][good])
                for i, e in enumerate(batch["error"]):
                    if e:
                        writer.fail(str(batch["video_id"][i]), str(e), source=str(batch["source"][i]))
                counter.update(len(batch["error"]), len(batch["error"]) - len(good))
                if progress:
                    progress(counter.done, len(todo))
        manifest = writer.publish()
        return EmbedReport(model=model, location=out, videos=len(samples), already_done=len(samples) - len(todo),
                           adopted=adopted, embedded=embedded, failed=counter.failed,
                           seconds=time.perf_counter() - start, manifest=manifest)
