"""The training job end to end: 2 Ray Train workers (gloo, CPU) over real shards, a real MLflow SQLite store."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from ray.train import TrainingFailedError

from jobs.output import QUIET_ENV
from pipelines.model.registry import open_model
from pipelines.shards.format import sample_table
from pipelines.storage.location import Location
from pipelines.train.job import run_training
from pipelines.train.plan import plan_training
from pipelines.train.reports import FAULT_ENV
from tempme.errors import UserError
from tests.pipelines.train.conftest import TINY, tiny_config

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def _run(cfg):
    """The one MLflow run of the job's name, and a client on its store."""
    client = mlflow.MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == [cfg.run.name]      # one run per job, even across restarts
    return runs[0], client


def _steps(client, run_id, metric):
    return [m.step for m in client.get_metric_history(run_id, metric)]


def _checkpoints(cfg) -> list[Path]:
    return sorted(Path(cfg.run.storage_path, cfg.run.name).glob("step_*"))


def test_two_workers_train_evaluate_log_and_register(synthetic_shards, tmp_path):
    cfg = tiny_config(synthetic_shards, tmp_path, "train.epochs=2", "run.name=two-workers")
    plan = plan_training(cfg)
    assert (plan.train_pairs, plan.local_batch, plan.steps_per_epoch) == (36, 2, 9)

    outcome = run_training(cfg)

    assert outcome.steps == plan.total_steps == 18
    run, client = _run(cfg)
    run_id = run.info.run_id
    assert run_id == outcome.run_id and run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == str(cfg.optim.lr) and run.data.params["plan.total_steps"] == "18"
    assert run.data.tags["selected_on_test_split"] == "true" and run.data.tags["selection_split"] == "test"
    # Each metric once per logging step / epoch: rank 0 logs, the other worker does not.
    assert _steps(client, run_id, "train_loss") == list(range(2, 19, 2))
    assert _steps(client, run_id, "test_t2v_r1") == [9, 18]
    for metric in ("learning_rate", "logit_scale", "videos_per_s", "peak_memory_mb"):
        assert len(_steps(client, run_id, metric)) == 9
    assert {"final_test_t2v_r1", "final_test_v2t_rsum", "steady_videos_per_s", "peak_memory_mb_rank0",
            "peak_memory_mb_rank1"} <= set(outcome.summary)
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert outcome.summary["steady_videos_per_s"] > 0

    def files(path=None):
        return sorted(f.path for f in client.list_artifacts(run_id, path))
    assert files() == ["best_adapter", "config.yaml", "merge_visualization", "plots"]
    assert files("best_adapter") == ["best_adapter/adapter.safetensors", "best_adapter/tempme_config.json"]
    assert files("plots") == ["plots/recall_at_k.png"]
    assert len(files("merge_visualization")) == 1

    # Ray Train keeps the best-scored checkpoint and the latest one.
    kept = [p.name for p in _checkpoints(cfg)]
    assert kept[-1] == "step_00000018" and len(kept) <= 2
    assert f"step_{outcome.best_step:08d}" in kept
    assert all((p / "adapter" / "adapter.safetensors").stat().st_size < 1_000_000 for p in _checkpoints(cfg))

    # The registered model is what the embedding job loads.
    mlflow.set_tracking_uri(outcome.tracking_uri)
    model, resolved = open_model(outcome.model_uri, tmp_path / "download")
    assert (resolved.name, resolved.version) == (cfg.tracking.registered_model, "1")
    assert model.encode_text(["a red square moving left"]).shape == (1, 64)
    assert run.data.tags["registered_model"] == f"models:/{cfg.tracking.registered_model}/1"


def _killing_rank1_after_step5(monkeypatch, tmp_path) -> Path:
    """Make training worker 1 die (os._exit) right after step 5, once; returns the file that marks it done."""
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"1:5:{marker}")
    return marker


def test_killed_worker_restarts_from_checkpoint(synthetic_shards, tmp_path, monkeypatch):
    marker = _killing_rank1_after_step5(monkeypatch, tmp_path)
    cfg = tiny_config(synthetic_shards, tmp_path, "train.checkpoint_every=2", "scaling.max_failures=1",
                      "tracking.visualize_videos=0", "tracking.system_metrics=false", "run.name=killed")

    outcome = run_training(cfg)

    assert marker.exists()                          # the worker really died ...
    assert outcome.steps == 9                       # ... and the run still ended at the planned step
    run, client = _run(cfg)
    # Restarted from a checkpoint before the kill (the controller may not have registered the step-4 one
    # yet when the worker died); the steps after it are trained again.
    assert run.data.tags["resumed_from_step"] in ("2", "4")
    assert _steps(client, run.info.run_id, "train_loss")[-2:] == [8, 9]
    assert _steps(client, run.info.run_id, "test_t2v_r1") == [9]
    assert run.info.status == "FINISHED"


def test_rerunning_a_dead_job_resumes_it(synthetic_shards, tmp_path, monkeypatch):
    marker = _killing_rank1_after_step5(monkeypatch, tmp_path)
    cfg = tiny_config(synthetic_shards, tmp_path, "train.checkpoint_every=2", "scaling.max_failures=0",
                      "tracking.visualize_videos=0", "tracking.system_metrics=false", "run.name=died")
    with pytest.raises(TrainingFailedError):       # no retries left: the whole job fails
        run_training(cfg)
    assert marker.exists() and _checkpoints(cfg)
    first, client = _run(cfg)
    assert first.info.status == "FAILED" and "registered_model" not in first.data.tags

    again = run_training(cfg)                      # the same command again

    assert again.run_id == first.info.run_id and again.steps == 9
    run, _ = _run(cfg)
    assert run.data.tags["resumed_from_step"] in ("2", "4") and run.info.status == "FINISHED"
    assert _steps(client, run.info.run_id, "test_t2v_r1") == [9]
    assert again.version == "1"


def test_the_command_joins_the_ray_cluster_at_ray_address(synthetic_shards, tmp_path):
    """`python -m jobs.train --ray-address` (what `ray job submit` runs) trains on that cluster, not a new one;
    with --verbose the libraries' logs come along, and rank 0's progress line still appears once."""
    import ray

    address = ray.get_runtime_context().gcs_address          # the tests' cluster, from another process
    cfg = tiny_config(synthetic_shards, tmp_path, "train.max_steps=1", "data.eval_split=null",
                      "data.test_split=null", "tracking.visualize_videos=0", "tracking.system_metrics=false",
                      "run.name=joined")
    argv = ["--config", str(TINY)] + [arg for key, value in cfg.flat().items() if value is not None
                                      for arg in ("--set", f"{key}={value}")]
    # not RAY_ADDRESS, nor the quiet settings an earlier in-process `main()` of this session left behind
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and k not in QUIET_ENV}
    done = subprocess.run([sys.executable, "-m", "jobs.train", "--ray-address", address, *argv, "--verbose"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Connecting to existing Ray cluster at address: {address}" in done.stderr
    assert f"Ray at {address}" in done.stderr and "trained 1 steps" in done.stdout
    # Ray Train's print patch wrote every line a worker prints twice.
    steps = [line for line in done.stderr.splitlines() if "train: 1/1 steps done" in line]
    assert len(steps) == 1 and "steps/s, ETA 0:00; epoch 1/1, train_loss=" in steps[0], done.stderr[-3000:]
    run, _ = _run(cfg)
    assert run.info.status == "FINISHED" and run.data.tags["registered_model"] == "models:/tempme-tiny/1"


def _corrupt_copy(shards: Path, tmp_path: Path, videos: int) -> Path:
    """A copy of the shards whose first `videos` train samples have their first frame's JPEG zeroed."""
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    rows = sample_table(Location.of(str(copy))).to_table(filter="split = 'train' AND error = ''").to_pylist()
    for row in rows[:videos]:
        with open(copy / row["shard"], "r+b") as tar:
            tar.seek(row["thumb_offset"])
            tar.write(b"\0" * row["thumb_size"])
    return copy


def test_corrupt_samples_are_skipped_and_counted_up_to_a_bound(synthetic_shards, tmp_path):
    """Two corrupt videos (6 of the 36 pairs): skipped and counted under the bound; past it, every worker
    stops at the same step and the job says why, once (no restart into the same samples)."""
    shards = _corrupt_copy(synthetic_shards, tmp_path, videos=2)
    cfg = tiny_config(shards, tmp_path, "data.max_corrupt=10", "run.name=tolerant", "tracking.visualize_videos=0")
    outcome = run_training(cfg)
    run, client = _run(cfg)
    assert run.info.status == "FINISHED" and outcome.steps == 9
    assert client.get_metric_history(run.info.run_id, "corrupt_samples")[-1].value == 6   # 3 captions each
    listed = Path(client.download_artifacts(run.info.run_id, "corrupt_samples.txt", str(tmp_path))).read_text()
    assert len(listed.splitlines()) == 6 and all(".tar: the sample of video" in line and " at bytes " in line
                                                 for line in listed.splitlines())

    (tmp_path / "strict").mkdir()
    strict = tiny_config(shards, tmp_path / "strict", "data.max_corrupt=2", "run.name=strict")
    with pytest.raises(UserError, match=r"stopped: \d+ corrupt samples met, more than data.max_corrupt=2"):
        run_training(strict)
    run, _ = _run(strict)
    assert run.info.status == "FAILED" and "corrupt samples" in run.data.tags["stopped_because"]
