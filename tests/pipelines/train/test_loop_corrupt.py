"""A run restarted from a checkpoint goes on counting the corrupt samples it had met before: the count lives in
the checkpoint's training state, so a crash cannot reset it and the bound (`data.max_corrupt`) still holds."""
import json
from pathlib import Path

import mlflow
import torch

from pipelines.model.registry import build_model
from pipelines.tracking import get_or_create_experiment, resolve_tracking_uri
from pipelines.train.checkpoint import TRAIN_STATE, TrainState, load_checkpoint, save_checkpoint
from pipelines.train.config import OptimSection
from pipelines.train.loop import CORRUPT_ARTIFACT, CorruptCount
from pipelines.train.optim import build_lr_scheduler, build_optimizer
from pipelines.train.reports import STOPPED_TAG
from pipelines.train.run_logger import RunLogger


def _trainable(model):
    params = list(model.trainable_parameters().values())
    optimizer = build_optimizer(params, OptimSection())
    return optimizer, build_lr_scheduler(optimizer, 10, 0.1)


def test_the_corrupt_samples_met_are_part_of_the_checkpoint(tmp_path):
    model = build_model("tempme-tiny-12f")
    state = TrainState(step=4, epoch=1, corrupt=["step 2: a.tar: the sample of video v1 at bytes 0-99"])
    saved = save_checkpoint(tmp_path / "ckpt", model, *_trainable(model), None, state)
    fresh = build_model("tempme-tiny-12f")
    assert load_checkpoint(saved, fresh, *_trainable(fresh), None) == state
    old = json.loads((saved / TRAIN_STATE).read_text())
    del old["corrupt"]                                  # a checkpoint written before the count was kept
    (saved / TRAIN_STATE).write_text(json.dumps(old))
    assert load_checkpoint(saved, fresh, *_trainable(fresh), None) == TrainState(step=4, epoch=1)


def test_a_restarted_count_goes_on_from_the_checkpoint_and_stops_past_the_bound(tmp_path):
    uri = resolve_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(get_or_create_experiment("corrupt", uri)).info.run_id
    restored = TrainState(step=4, corrupt=["step 2: a.tar: the sample of video v1 at bytes 0-99"])
    with RunLogger(True, run_id, uri, None) as logger:
        corrupt = CorruptCount(2, logger, torch.device("cpu"), restored.corrupt)
        corrupt.met(["b.tar: the sample of video v2 at bytes 0-99"])
        assert not corrupt.check(5) and corrupt.total == 2          # 1 before the restart + 1 since
        corrupt.met(["c.tar: the sample of video v3 at bytes 0-99"])
        assert corrupt.check(6) and corrupt.over                    # 3 > max_corrupt=2
    assert [r.split(":")[0] for r in restored.corrupt] == ["step 2", "step 5", "step 6"]   # the next checkpoint's
    listed = Path(client.download_artifacts(run_id, CORRUPT_ARTIFACT, str(tmp_path))).read_text().splitlines()
    assert listed == restored.corrupt
    assert [m.value for m in client.get_metric_history(run_id, "corrupt_samples")] == [2, 3]
    assert "3 corrupt samples met" in client.get_run(run_id).data.tags[STOPPED_TAG]
