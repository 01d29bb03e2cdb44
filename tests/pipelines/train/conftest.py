"""Shared pieces of the training tests: a tiny CPU config over the synthetic shards, isolated MLflow state."""
from pathlib import Path

import mlflow
import pytest

from pipelines.train.config import TINY_CONFIG, load_config

TINY = TINY_CONFIG


def tiny_config(shards, workdir: Path, *overrides: str):
    """The shipped tiny config made small: 2 CPU workers, 4 pairs per step, everything under `workdir`.

    The synthetic shards have splits train (12 videos, 36 pairs) and test (4 videos), so the test split is
    also the selection split here.
    """
    return load_config(TINY, [
        f"data.shards={shards}", "data.eval_split=test", "data.select_on_test=true",
        "train.batch_size=4", "train.eval_batch_size=4", "train.epochs=1", "train.log_every=2",
        "scaling.num_workers=2", "tracking.visualize_videos=1", "tracking.system_metrics=true",
        "tracking.system_metrics_interval_s=1",
        f"run.storage_path={workdir / 'ray'}", f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        *overrides])


@pytest.fixture(autouse=True)
def _restore_mlflow_uri():
    """The job sets the process's MLflow tracking URI; give the next test the one it had."""
    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)
