"""Training refuses, before any worker starts, what cannot work on its cluster or with its shards."""
import json
import shutil

import pytest

from jobs.cli import main
from pipelines.cluster.connect import spans_nodes
from pipelines.train.cluster_fit import check_fits_cluster, check_shards_fit_model
from pipelines.train.config import ConfigError
from tests.pipelines.train.conftest import TINY, tiny_config


def node(cpus, alive=True, gpus=0):
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


HEAD_ONLY = [node(0)]                    # an autoscaling cluster whose workers are at zero
TWO_NODES = [node(4), node(8)]


def test_what_spans_nodes(ray_cluster):
    assert spans_nodes(HEAD_ONLY) and spans_nodes(TWO_NODES)
    assert not spans_nodes(ray_cluster.nodes())                  # the test session's one-node Ray
    assert not spans_nodes([node(4), node(8, alive=False)])


@pytest.mark.parametrize("nodes", [HEAD_ONLY, TWO_NODES], ids=["autoscaling-head", "two-nodes"])
@pytest.mark.parametrize("overrides, key, says", [
    ([], "data.shards", "use an object-store URI"),
    (["data.shards=s3://bucket/shards,/local/more-shards"], "data.shards", "/local/more-shards is a local path"),
    (["data.shards=s3://bucket/shards"], "run.storage_path", "scaling.shared_filesystem=true"),
    (["data.shards=s3://bucket/shards", "run.storage_path=s3://bucket/ray"], "tracking.uri", "MLflow server"),
])
def test_a_cluster_of_several_nodes_refuses_local_paths_and_sqlite(tmp_path, nodes, overrides, key, says):
    cfg = tiny_config(tmp_path / "shards", tmp_path, *overrides)
    with pytest.raises(ConfigError) as error:
        check_fits_cluster(cfg, f"sqlite:///{tmp_path}/m.db", nodes)
    assert error.value.key == key and says in str(error.value)


def test_shared_filesystems_and_servers_pass(tmp_path):
    cfg = tiny_config(tmp_path / "shards", tmp_path, "scaling.shared_filesystem=true")
    check_fits_cluster(cfg, "http://mlflow:5000", TWO_NODES)
    check_fits_cluster(tiny_config(tmp_path, tmp_path), f"sqlite:///{tmp_path}/m.db", [node(2)])   # one node


@pytest.mark.parametrize("overrides, nodes, says", [
    (["scaling.num_workers=3"], [node(2)], "3 workers need 3 CPU, but this single-node Ray cluster has 2"),
    (["scaling.use_gpu=true"], [node(8)], "need 2 GPU, but this single-node Ray cluster has 0"),
])
def test_a_single_node_that_cannot_hold_the_workers_is_refused(tmp_path, overrides, nodes, says):
    cfg = tiny_config(tmp_path, tmp_path, *overrides)
    with pytest.raises(ConfigError, match=says):
        check_fits_cluster(cfg, "sqlite:///m.db", nodes)


def test_shards_of_another_shape_than_the_preset_are_refused(synthetic_shards, tmp_path, capsys):
    check_shards_fit_model(tiny_config(synthetic_shards, tmp_path), 12, 224)      # what they were made with
    shards = tmp_path / "shards"
    shutil.copytree(synthetic_shards, shards)
    options = shards / "_index" / "options.json"
    options.write_text(json.dumps({**json.loads(options.read_text()), "frames": 8}))
    argv = ["train", "--config", str(TINY), "--set", f"data.shards={shards}",
            "--set", f"run.storage_path={tmp_path / 'ray'}", "--set", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "data.shards" in err and "frames=8, but tempme-tiny-12f takes frames=12" in err
    assert not (tmp_path / "ray").exists() and not (tmp_path / "m.db").exists()
