"""The embedding job: shards + model URI -> index, incremental per model version, safe to kill at any time.

1. Check the MLflow store answers and resolve the model URI to a pinned version (driver, once).
2. Take the index's writer lease; what the index holds for this model version is done, the rest of the
   shards' sample table is to do (`plan`: an anti-join written as plan files, no object per video on the
   driver), and videos that preprocessing recorded as removed leave the index.
3. Ray Data, three stages: CPU tasks read and decode frames (uint8) -> an autoscaling pool of model actors
   (one model each, a GPU each when asked for) -> CPU tasks write Lance fragments; the plan files are read
   by Ray Data's read tasks on the workers. Only the fragments'
   descriptions and per-video ids and errors come back to the driver, which commits them as they arrive.
4. Publish (a new model version becomes live in one commit), keep the ANN index fit and delete versions past
   the retention period (a Ray task), and log counts and speed to MLflow.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from pipelines import tracking
from pipelines.cluster.connect import check_stores_from_a_worker, connect, spans_nodes
from pipelines.cluster.progress import Progress
from pipelines.embed.encoder import VideoEmbedder, read_frames
from pipelines.embed.options import EmbedOptions
from pipelines.embed.plan import PLAN_DIR, EmbedPlan, plan_embedding, read_part
from pipelines.index import IndexStore, ModelRef, write_fragment
from pipelines.index.table import RETENTION
from pipelines.model.adapter_bytes import adapter_files
from pipelines.model.registry import resolve_model
from pipelines.shards.format import read_removed
from pipelines.shards.reader import read_summary
from pipelines.storage.location import Location
from tempme.config import PRECISIONS
from tempme.errors import UserError

MAX_BLOCKS = 10_000                 # parts of the plan Ray Data schedules (a file and a range of row groups each)
DECODE_WORKER_BYTES = 512 * 2**20   # what a Ray worker with torch and torchvision imported holds (measured ~600 MiB)

logger = logging.getLogger(__name__)


class EmbedError(UserError):
    pass


@dataclass
class EmbedReport:
    model: ModelRef
    location: str
    videos: int               # distinct videos in the shards
    already_done: int         # in the index for this model version (committed by earlier or interrupted runs)
    embedded: int             # embedded by this run
    failed: int
    removed: int              # rows of videos that preprocessing recorded as removed, deleted by this run
    seconds: float            # embedding stage only (Ray pipeline start to last fragment committed)
    index: dict | None        # `IndexStore.info()` after the run
    mlflow_run_id: str | None = None

    @property
    def videos_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        live = (f"version {self.index['version']}, {self.index['rows']} videos, {self.index['search']} search"
                if self.index else "empty")
        return (f"{self.location}: {live}; model {self.model.name} v{self.model.version}\n"
                f"  {self.videos} videos in the shards: {self.already_done} already embedded, "
                f"{self.embedded} embedded now ({self.videos_per_s:.1f} videos/s), {self.failed} failed, "
                f"{self.removed} removed")


def _actor_resources(ray, device: str, cpus_per_worker: int) -> tuple[int, int]:
    """(num_cpus, num_gpus) per model actor. `gpu` asks for one GPU each whatever is up now, so an autoscaling
    cluster adds GPU nodes; only a fixed cluster without any is an error. `auto` takes GPUs when the cluster has
    them (an autoscaling cluster that should grow GPU nodes is asked with `gpu`)."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "gpu" and gpus < 1 and not spans_nodes(ray.nodes()):
        raise EmbedError("--device gpu, but this Ray cluster has no GPUs and no autoscaler to add them")
    return cpus_per_worker, int(device == "gpu" or (device == "auto" and gpus >= 1))


def _fitting_actors(ray, cpus_per_actor: int) -> int:
    """On a cluster that cannot grow, the most model actors that leave a CPU for decoding frames (without
    one the pipeline would wait forever); an autoscaling cluster adds nodes instead."""
    if spans_nodes(ray.nodes()):
        return 10**6
    cpus = int(ray.cluster_resources().get("CPU", 0))
    fitting = (cpus - 1) // cpus_per_actor
    if fitting < 1:
        raise EmbedError(f"this Ray cluster has {cpus} CPUs: one model actor of {cpus_per_actor} CPUs and one "
                         f"CPU for decoding frames need {cpus_per_actor + 1}")
    return fitting


def decode_memory(shards: Sequence[str], batch_size: int) -> int:
    """Bytes a decode task holds: its worker process (torch imported) and a batch of uint8 frames twice
    (decoded, then stacked) at the shards' size."""
    try:
        options = read_summary(shards).get("options", {})
    except (FileNotFoundError, OSError, ValueError):
        options = {}
    frames, side = int(options.get("frames", 12)), int(options.get("resolution", 224))
    return DECODE_WORKER_BYTES + 2 * batch_size * frames * 3 * side * side


def _pipeline(ray, o: EmbedOptions, plan: EmbedPlan, adapter: dict[str, bytes], index_uri: str, model: ModelRef):
    """Rows of the videos to embed -> frames (CPU tasks) -> embeddings (actor pool) -> fragments (CPU tasks)."""
    batch_size = o.batch_size
    num_cpus, num_gpus = _actor_resources(ray, o.device, o.cpus_per_worker)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False   # the job prints its own progress
    blocks = max(1, min(math.ceil(plan.todo / batch_size), MAX_BLOCKS))
    least, most = o.min_workers, o.workers
    most = min(most, blocks, _fitting_actors(ray, num_cpus))
    parts = plan.parts(blocks)
    ds = ray.data.from_items(parts, override_num_blocks=len(parts)).map_batches(
        read_part, batch_size=1, batch_format="pyarrow", num_cpus=0.25)
    # Declaring the memory a decode task holds also keeps Ray Data from fusing this stage into the model
    # actors (it fuses stages whose resource requests are equal), which would make the model wait for decoding.
    frames = ds.map_batches(read_frames, batch_size=batch_size, batch_format="numpy", num_cpus=1,
                            memory=decode_memory(o.shards, batch_size))
    embedded = frames.map_batches(
        VideoEmbedder,
        fn_constructor_kwargs={"adapter": adapter, "threads": o.cpus_per_worker, "use_gpu": num_gpus > 0,
                               "precision": o.precision, "compile_batch": batch_size if o.compile else None},
        batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=min(least, most), max_size=most),
        num_cpus=num_cpus, num_gpus=num_gpus)
    return embedded.map_batches(write_fragment, fn_kwargs={"uri": index_uri, "model": model.__dict__},
                                batch_size=o.part_rows, batch_format="numpy", num_cpus=0.5)


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
    metrics = {"videos": report.videos, "already_done": report.already_done, "embedded": report.embedded,
               "failed": report.failed, "removed": report.removed, "seconds": report.seconds,
               "videos_per_s": report.videos_per_s, "index_videos": report.index["rows"] if report.index else 0}
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     tags=[mlflow.entities.RunTag(k, str(v)) for k, v in {
                         **options, "index_location": report.location,
                         "index_version": report.index["version"] if report.index else ""}.items()])
    if report.index:
        client.log_text(run_id, json.dumps(report.index, indent=1, default=str), "index_info.json")
    client.set_terminated(run_id, "FINISHED")


def embed_corpus(options: EmbedOptions, progress: Callable[[int, int], None] | None = None,
                 log: Callable[[str], None] | None = None) -> EmbedReport:
    """Embed the videos of `options.shards` that `options.out` does not hold yet for the version `options.model`
    (a URI) names; publish atomically.

    The model stage is an actor pool of `min_workers` to `workers` actors that Ray Data grows with the work.

    `log` gets a line when embedding starts and then at most every `progress_every` seconds (videos done,
    failed, videos/s); `progress(done, total)` is called after every batch. `precision` is the actors'
    inference precision (`auto`: bf16 where the hardware computes it natively); `compile` compiles each
    actor's video encoder once for the batch size. A tracking store that does not answer
    (`tracking.TrackingUnavailable`) or a model it does not hold (ValueError) is found before anything is
    written."""
    import mlflow
    import ray

    o = options
    if not (o.shards and o.model and o.out):
        raise UserError("the embedding job needs shards, model and out")
    if o.precision not in PRECISIONS:
        raise UserError(f"unknown precision {o.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if o.workers < 1 or o.batch_size < 1 or o.cpus_per_worker < 1:
        raise UserError(f"workers, batch_size and cpus_per_worker must be at least 1 "
                         f"(got {o.workers}, {o.batch_size}, {o.cpus_per_worker})")
    if not 1 <= o.min_workers <= o.workers:
        raise UserError(f"min_workers must be between 1 and workers ({o.workers}), got {o.min_workers}")
    uri = tracking.use_store(o.tracking_uri)
    store = IndexStore(o.out)
    store.root.check_usable("--out")
    store.check()
    with tempfile.TemporaryDirectory(prefix="tempme-adapter-") as tmp:   # pinned: the version the alias names now
        ref, adapter_dir = resolve_model(o.model, tmp, tracking_uri=uri)
        adapter = adapter_files(adapter_dir)
    with store.writer(ref, run_id=uuid.uuid4().hex[:12]) as writer:   # a busy index stops here, untouched
        run_id = _start_run(uri, o.experiment, ref, str(o.out))
        writer.run_id = run_id
        try:
            report = _embed(ray, writer, o, ref, adapter, progress, log or logger.info)
        except BaseException:
            mlflow.MlflowClient(uri).set_terminated(run_id, "FAILED")
            raise
    report.mlflow_run_id = run_id
    _finish_run(uri, run_id, report, {key: getattr(o, key) for key in (
        "workers", "min_workers", "batch_size", "device", "precision", "compile", "cpus_per_worker", "shards")})
    return report


def plan_run(writer, shards: Sequence[str], batch_size: int) -> tuple[EmbedPlan, int]:
    """The driver's planning, holding the lease: (what to embed, written as plan files; how many rows of
    videos removed from the shards' folders it deleted from the index)."""
    plans = writer.store.root.child(PLAN_DIR)
    plans.fs.delete_dir_contents(plans.path, missing_dir_ok=True)   # a killed run's (the lease is ours now)
    plan = plan_embedding(shards, writer.done_ids(), writer.store.root, writer.run_id, batch_size)
    if not plan.videos:
        raise EmbedError(f"{','.join(shards)}: no finished shards (is it the output folder of `tempme preprocess`?)")
    removed = writer.remove(pa.concat_arrays([read_removed(Location.of(f))["id"].combine_chunks()
                                              for f in shards]))
    return plan, removed


def _embed(ray, writer, o: EmbedOptions, model: ModelRef, adapter: dict[str, bytes], progress, log) -> EmbedReport:
    store, shards, out = writer.store, o.shards, str(o.out)
    plan, removed = plan_run(writer, shards, o.batch_size)
    log(f"embed: {plan.videos} videos in the shards, {plan.videos - plan.todo} already in {out}, "
        f"{plan.todo} to embed with {model.name} v{model.version}" + (f", {removed} removed" if removed else ""))
    counter = Progress("embed", plan.todo, o.progress_every, log)
    start = time.perf_counter()
    changed = bool(plan.todo or removed or writer.replacing or store.serving() is not None)
    if changed:
        connect(o.ray_address)
        check_stores_from_a_worker([("--shards", folder) for folder in shards] + [("--out", out)])
    if plan.todo:
        pipeline = _pipeline(ray, o, plan, adapter, writer.uri, model)
        for batch in pipeline.iter_batches(batch_size=None, batch_format="numpy"):
            writer.commit([str(f) for f in batch["fragments"] if f])
            failures = [{"video_id": str(v), "error": str(e), "source": str(src)}
                        for v, e, src in zip(batch["video_id"], batch["error"], batch["source"]) if e]
            writer.record_failures(failures)
            counter.update(len(batch["error"]), len(failures))
            if progress:
                progress(counter.done, plan.todo)
    plan.remove()
    writer.publish()
    seconds = time.perf_counter() - start
    if changed:
        ray.get(ray.remote(num_cpus=1)(_upkeep).remote(out))   # minutes of ANN build: the lease beats on
    else:    # nothing new: no Ray, no ANN work; only old versions go
        store.cleanup(RETENTION)
    return EmbedReport(model=model, location=out, videos=plan.videos, already_done=plan.videos - plan.todo,
                       embedded=counter.done - counter.failed, failed=counter.failed, removed=removed,
                       seconds=seconds, index=store.info())


def _upkeep(location: str) -> None:
    """Runs as a Ray task after publishing (building an ANN index reads every vector, no work for the driver):
    keep the ANN index fit, and delete versions older than the retention period, so that nightly commits do
    not pile up while readers pinned to a recent version keep theirs."""
    store = IndexStore(location)
    if store.dataset() is not None:
        store.refresh_search()        # the new rows are indexed: readers pinned before them move on now
    store.cleanup(RETENTION)
