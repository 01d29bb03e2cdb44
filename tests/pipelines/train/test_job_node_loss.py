"""A worker node lost in the middle of training (killed without warning, a fresh node added): Ray Train
restarts the worker group from the latest step checkpoint and the job ends at its planned step."""
import os
import sys

import pytest

from jobs.output import QUIET_ENV
from tests.fixtures.node_loss import run_losing_a_node
from tests.pipelines.train.conftest import TINY, tiny_config
from tests.pipelines.train.test_job import REPO, _run, _steps
from tests.pipelines.train.test_job_tracking_server import mlflow_server  # noqa: F401  (a cluster of several nodes needs a server)

pytestmark = pytest.mark.slow    # a Ray cluster of three nodes in a process of its own


def test_a_worker_node_lost_mid_training_resumes_from_a_step_checkpoint(synthetic_shards, tmp_path,
                                                                       mlflow_server):  # noqa: F811
    cfg = tiny_config(synthetic_shards, tmp_path, f"tracking.uri={mlflow_server}", "train.checkpoint_every=2",
                      "train.epochs=2", "scaling.max_failures=2", "scaling.shared_filesystem=true",
                      "tracking.visualize_videos=0", "tracking.system_metrics=false", "run.name=node-lost")
    argv = ["--config", str(TINY)] + [arg for key, value in cfg.flat().items() if value is not None
                                      for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "jobs.train", *argv]
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
    # Ray Train registers a reported checkpoint at its next poll of the workers (every 2 s): lose the node a
    # few checkpoints in, and long before the end of the run (two epochs)
    result = run_losing_a_node(command, trigger="train: 8/18 steps", victim=1, cwd=str(REPO), env=env)
    assert result["code"] == 0, "\n".join(result["lines"])
    run, client = _run(cfg)
    assert run.info.status == "FINISHED" and int(run.data.tags["resumed_from_step"]) >= 2
    assert _steps(client, run.info.run_id, "train_loss")[-2:] == [16, 18]
    print(f"node lost mid-training: the job finished in {result['seconds']:.1f} s")
