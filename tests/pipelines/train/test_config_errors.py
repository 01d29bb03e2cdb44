"""`tempme train` with configs that cannot run: exit status 2 and a message naming the key, before any worker."""
import shutil

import pytest

from jobs.cli import main
from tests.pipelines.train.conftest import TINY


@pytest.mark.parametrize("overrides, key", [
    (["model.preset=tempme-b99-12f"], "model.preset"),
    (["train.batch_size=5", "scaling.num_workers=2"], "train.batch_size"),
    (["optim.lr=fast"], "optim.lr"),
    (["data.shards={missing}"], "data.shards"),
    (["data.eval_split=val"], "data.eval_split"),           # the synthetic shards have no val split
    (["data.train_split=nothing", "data.eval_split=null"], "data.train_split"),
    (["data.shards={shards},{missing}"], "data.shards"),                   # one of several folders is missing
    (["data.shards={broken}"], "data.shards"),                             # a shard is gone: listed
    (["data.shuffle_window=0"], "data.shuffle_window"),
    (["data.bad_shards=ignore"], "data.bad_shards"),
    (["train.v2t_protocol=best"], "train.v2t_protocol"),
])
def test_bad_config_names_the_key(overrides, key, synthetic_shards, tmp_path, capsys):
    broken = tmp_path / "broken"
    if any("{broken}" in o for o in overrides):
        shutil.copytree(synthetic_shards, broken)
        (broken / "train-000001.tar").unlink()
    overrides = [o.format(missing=tmp_path / "no-shards", shards=synthetic_shards, broken=broken) for o in overrides]
    argv = ["train", "--config", str(TINY), "--set", f"data.shards={synthetic_shards}",
            "--set", f"run.storage_path={tmp_path / 'ray'}", "--set", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    for item in overrides:
        argv += ["--set", item]

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert f"tempme train: {key}:" in err
    if broken.exists():
        assert "train-000001.tar: missing" in err
    assert not (tmp_path / "ray").exists() and not (tmp_path / "m.db").exists()


def test_check_prints_the_plan(synthetic_shards, tmp_path, capsys):
    argv = ["train", "--config", str(TINY), "--check", "--set", f"data.shards={synthetic_shards}",
            "--set", "data.eval_split=test", "--set", "data.select_on_test=true",
            "--set", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"shards:\n  - {synthetic_shards}\n" in out                  # the resolved config is printed
    assert "ok: 36 pairs of 12 videos per epoch, 3 steps of 8 per worker, 9 steps in all" in out
