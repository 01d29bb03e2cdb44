"""The training job against a real `mlflow server` on 127.0.0.1, and a clear error when it is not there."""
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from pipelines.model.registry import open_model
from pipelines.tracking import TrackingUnavailable, check_reachable, start_or_resume_run
from pipelines.train.job import run_training
from tests.fixtures.servers import free_port, stop
from tests.pipelines.train.conftest import tiny_config


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` with a SQLite store and proxied artifacts under tmp_path; its URL once it answers."""
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop(proc)
        log.close()


@pytest.mark.slow
def test_training_logs_to_a_server_and_registers_there(synthetic_shards, tmp_path, mlflow_server):
    cfg = tiny_config(synthetic_shards, tmp_path, f"tracking.uri={mlflow_server}", "tracking.system_metrics=false",
                      "tracking.visualize_videos=0", "train.max_steps=4", "run.name=on-server")

    outcome = run_training(cfg)

    assert outcome.tracking_uri == mlflow_server and outcome.steps == 4
    client = mlflow.MlflowClient(mlflow_server)
    run = client.get_run(outcome.run_id)
    assert run.info.run_name == "on-server" and run.data.metrics["train_loss"] > 0
    assert "test_t2v_r1" in run.data.metrics and "final_test_t2v_r1" in run.data.metrics
    assert {f.path for f in client.list_artifacts(outcome.run_id)} >= {"best_adapter", "config.yaml", "plots"}
    # The registered adapter downloads through the server's artifact proxy and loads.
    mlflow.set_tracking_uri(mlflow_server)
    model, resolved = open_model(outcome.model_uri, tmp_path / "from-server")
    assert resolved.version == "1" and model.encode_text(["a blue bar moving up"]).shape == (1, 64)
    # The run is found again by its name.
    assert start_or_resume_run("on-server", cfg.tracking.experiment, mlflow_server) == (outcome.run_id, True)


def test_unreachable_server_fails_before_training(synthetic_shards, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        check_reachable(dead, timeout_s=2)
    cfg = tiny_config(synthetic_shards, tmp_path, f"tracking.uri={dead}")
    with pytest.raises(TrackingUnavailable, match=dead):
        run_training(cfg)
    assert not (tmp_path / "ray").exists()          # no worker was started, no storage was written
