"""The training job as the driver sees it: check everything, start or resume the run, fit, register.

Everything that can be known wrong is found before a worker starts: the config (`check_config`), the shards
and splits (`plan_training`), what the shards hold and where they, the checkpoints and the tracking
store are against the cluster (`cluster_fit`), and the tracking store itself (`check_reachable`). The Ray Train
run and the MLflow run are both named `run.name`, so re-running the same command after the whole job died
continues both: Ray Train from the latest checkpoint under `run.storage_path`, MLflow in the same run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.cluster.connect import connect
from pipelines.model.registry import register_adapter
from pipelines.tracking import activate_run, check_reachable, resolve_tracking_uri, start_or_resume_run
from pipelines.train.cluster_fit import check_fits_cluster, check_shards_fit_model
from pipelines.train.config import ConfigError, TrainJobConfig, check_config
from pipelines.train.plan import TrainPlan, plan_training
from pipelines.train.reports import ADAPTER, FAULT_ENV, SCORE, STOPPED_TAG, SUMMARY_PREFIXES, best_checkpoint
from tempme.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    tracking_uri: str
    steps: int
    model_uri: str            # models:/<name>@<alias>
    version: str
    best_step: int
    summary: dict[str, float]  # final test-split metrics, steady throughput, peak memory of each worker


def _storage_path(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _log_config(cfg: TrainJobConfig, plan: TrainPlan, resumed: bool) -> None:
    """The resolved config as params and as an artifact; a resumed run must not have changed any of it."""
    import mlflow

    params = {**cfg.flat(), **{f"plan.{k}": v for k, v in plan.to_dict().items()}}
    params = {k: str(v) for k, v in params.items()}
    if resumed:
        logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            key = changed[0]
            raise ConfigError(key, f"run {cfg.run.name!r} was started with {key}={logged[key]!r}, now "
                                   f"{params[key]!r}; resume it unchanged or choose a new run.name")
    mlflow.log_params(params)
    mlflow.log_text(cfg.to_yaml(), "config.yaml")
    selected_on_test = cfg.data.eval_split is not None and cfg.data.eval_split == cfg.data.test_split
    mlflow.set_tags({"selection_split": cfg.data.eval_split or "none (latest checkpoint)",
                     "selected_on_test_split": str(selected_on_test).lower(),
                     "preset": cfg.model.preset, "v2t_protocol": cfg.train.v2t_protocol})
    if selected_on_test:
        log.warning("the model is selected on the test split %r (data.select_on_test=true); its test metrics "
                    "are optimistic", cfg.data.test_split)


def _train_worker(loop_config: dict) -> None:
    """Ray Train's worker function, which imports the training loop (torch, the model) in the worker only."""
    from pipelines.train.loop import train_worker

    train_worker(loop_config)


def _trainer(cfg: TrainJobConfig, plan: TrainPlan, run_id: str, uri: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    # Ray Train's print patch would write every line a worker prints twice: to sys.stderr, which a Ray worker
    # has replaced, so the patch also tees there, and through the root logger's console handler.
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    if os.environ.get(FAULT_ENV):
        env[FAULT_ENV] = os.environ[FAULT_ENV]
    return TorchTrainer(
        _train_worker,
        train_loop_config={"config": cfg.to_dict(), "plan": plan.to_dict(), "run_id": run_id, "tracking_uri": uri},
        torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo",
                                 timeout_s=cfg.scaling.collective_timeout_s),
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=RunConfig(
            name=cfg.run.name, storage_path=_storage_path(cfg.run.storage_path),
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
            # Keeps the best-scored checkpoint and, always, the latest one.
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="max"),
            worker_runtime_env={"env_vars": env},
        ),
    )


def run_training(cfg: TrainJobConfig, ray_address: str | None = None) -> TrainOutcome:
    """Train `cfg` with Ray Train, tracked in MLflow.

    Runs on the Ray this process is already connected to, else joins `ray_address` (None: $RAY_ADDRESS,
    else a local Ray started here).
    """
    import mlflow
    import ray

    check_config(cfg)
    check_shards_fit_model(cfg, cfg.model.config.frames, cfg.model.config.image_size)
    plan = plan_training(cfg)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    check_reachable(uri)
    connect(ray_address)
    check_fits_cluster(cfg, uri, ray.nodes())
    run_id, resumed = start_or_resume_run(cfg.run.name, cfg.tracking.experiment, uri)
    with activate_run(run_id, uri):
        _log_config(cfg, plan, resumed)
    log.info("train: MLflow run %s (%s) at %s, Ray at %s; %s", run_id, "resumed" if resumed else "new", uri,
             ray.get_runtime_context().gcs_address, plan)
    try:
        result = _trainer(cfg, plan, run_id, uri).fit()
    except BaseException:
        mlflow.MlflowClient(uri).set_terminated(run_id, "FAILED")   # re-running the command resumes it
        raise

    stopped = mlflow.MlflowClient(uri).get_run(run_id).data.tags.get(STOPPED_TAG)
    if stopped:
        mlflow.MlflowClient(uri).set_terminated(run_id, "FAILED")
        raise UserError(f"train: run {cfg.run.name} stopped: {stopped}")
    checkpoint, metrics = best_checkpoint(result.best_checkpoints)
    with activate_run(run_id, uri), checkpoint.as_directory() as directory:
        adapter = Path(directory) / ADAPTER
        mlflow.log_artifacts(str(adapter), "best_adapter")
        version = register_adapter(adapter, cfg.tracking.registered_model, cfg.tracking.alias)
        mlflow.set_tags({"best_step": str(metrics["step"]), "registered_model":
                         f"models:/{cfg.tracking.registered_model}/{version}"})
        logged = mlflow.get_run(run_id).data.metrics
    summary = {k: v for k, v in logged.items() if k.startswith(SUMMARY_PREFIXES)}
    return TrainOutcome(run_id=run_id, tracking_uri=uri, steps=int(result.metrics["step"]),
                        model_uri=f"models:/{cfg.tracking.registered_model}@{cfg.tracking.alias}",
                        version=version, best_step=int(metrics["step"]), summary=summary)
