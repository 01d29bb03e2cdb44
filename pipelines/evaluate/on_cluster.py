"""Evaluation as a job: the driver checks the split and pins the model, one Ray task embeds and scores.

The driver runs on the head node when the job is submitted, so it counts the split without a row per video
(`SplitCount`) and never imports the model or the data loader; the task does.
"""
from __future__ import annotations

import dataclasses
import tempfile

from pipelines.cluster.connect import connect, spans_nodes
from pipelines.evaluate.metrics import EvalResult
from pipelines.evaluate.options import EvaluateOptions
from pipelines.model.registry import ModelRef, resolve_model
from pipelines.shards.reader import SplitCount
from tempme.errors import UserError


def evaluate_on_cluster(options: EvaluateOptions) -> tuple[EvalResult, ModelRef]:
    """`retrieval.evaluate_model` as one Ray task: on a GPU of the cluster when `device` is gpu (an autoscaler
    adds one), else on its CPUs, never in the driver. The driver pins the model version first (an unknown model
    or a store that does not answer is told here), and the task opens it."""
    import mlflow
    import ray

    o, gpu = options, options.device == "gpu"
    SplitCount.count(o.shards, o.split)     # a missing split or bad shards: told here, before any task
    with tempfile.TemporaryDirectory(prefix="tempme-evaluate-") as tmp:
        pinned, _ = resolve_model(o.model, tmp, o.tracking_uri)     # so is an unknown model or a silent store
    store = mlflow.get_tracking_uri() if o.model.startswith(("models:/", "runs:/")) else None
    connect(o.ray_address)
    if gpu and ray.cluster_resources().get("GPU", 0) < 1 and not spans_nodes(ray.nodes()):
        raise UserError("--device gpu, but this Ray cluster has no GPUs and no autoscaler to add them")
    in_task = dataclasses.replace(o, model=pinned.uri, tracking_uri=store)

    def evaluate() -> tuple[EvalResult, ModelRef]:
        from pipelines.evaluate.retrieval import evaluate_model

        return evaluate_model(in_task, "cuda" if gpu else "cpu")

    task = ray.remote(num_cpus=max(o.loader_workers, 1), num_gpus=int(gpu), max_retries=0)(evaluate)
    try:
        return ray.get(task.remote())
    except ray.exceptions.RayTaskError as err:   # the task's own error (a bad model URI), without Ray's wrapping
        raise err.cause if isinstance(err.cause, Exception) else err from None
