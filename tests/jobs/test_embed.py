"""`tempme embed` refuses a tracking store or a model it cannot use with one message, before writing anything."""
import socket

import mlflow
import pytest

from jobs.cli import main
from pipelines import tracking
from pipelines.model_store import build_model, register_adapter

NAME = "tiny-embed"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real SQLite MLflow store holding one registered version of a tiny adapter, alias `champion`."""
    work = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{work}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_EXPERIMENT_ID", tracking.get_or_create_experiment("models", uri))
        mlflow.set_tracking_uri(uri)
        try:
            adapter = build_model("tempme-tiny-12f").save_adapter(work / "adapter")
            assert register_adapter(adapter, NAME, "champion") == "1"
        finally:
            mlflow.set_tracking_uri(previous)
    return uri


def embed(tmp_path, model, tracking_uri):
    return main(["embed", "--shards", str(tmp_path / "shards"), "--model", model, "--out", str(tmp_path / "index"),
                 "--tracking-uri", tracking_uri])


def test_an_unreachable_tracking_server_is_one_message_naming_it(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert embed(tmp_path, f"models:/{NAME}@champion", dead) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempme embed: ") and dead in err and "unreachable" in err
    assert "Traceback" not in err
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("model", [f"models:/{NAME}@missing", f"models:/{NAME}/7", "models:/no-such-model@champion",
                                   "runs:/0123456789abcdef0123456789abcdef/adapter"])
def test_a_model_the_store_does_not_hold_is_one_message_naming_it(registry, tmp_path, capsys, model):
    assert embed(tmp_path, model, registry) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempme embed: ") and model in err and registry in err, err
    assert not (tmp_path / "index").exists()
    assert mlflow.MlflowClient(registry).get_experiment_by_name("tempme-embed") is None   # no run was started
