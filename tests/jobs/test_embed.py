"""`tempme embed` refuses a tracking store or a model it cannot use with one message, before writing anything."""
import multiprocessing
import socket

import mlflow
import pytest

from jobs.cli import main
from pipelines import tracking
from pipelines.model.registry import build_model, register_adapter

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


def test_an_index_path_that_holds_something_else_is_refused_before_any_work(registry, tmp_path, capsys):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "notes.txt").write_text("mine")
    assert embed(tmp_path, f"models:/{NAME}@champion", registry) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempme embed: ") and "holds other things (notes.txt)" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["notes.txt"]


def test_a_missing_bucket_or_refused_credentials_are_one_message(registry, tmp_path, capsys, s3_server,
                                                                 monkeypatch):
    assert main(["embed", "--shards", str(tmp_path), "--model", f"models:/{NAME}@champion",
                 "--out", "s3://no-such-bucket/index", "--tracking-uri", registry]) == 2
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert main(["embed", "--shards", str(tmp_path), "--model", f"models:/{NAME}@champion",
                 "--out", f"{s3_server.prefix('creds')}/index", "--tracking-uri", registry]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "refused or did not answer" in err and "Traceback" not in err


def _first_use(uri, results):
    tracking.check_reachable(uri)
    results.put(tracking.get_or_create_experiment("tempme-embed", uri))


@pytest.mark.slow      # two whole embedding jobs, each with its own Ray
def test_two_jobs_starting_at_once_on_a_fresh_sqlite_store_both_get_it(tmp_path):

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    procs = [context.Process(target=_first_use, args=(uri, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len({results.get(timeout=5) for _ in procs}) == 1      # one experiment, found by both
