"""Adapters through a real MLflow SQLite registry: register, resolve every URI kind, load and embed, promote."""
import mlflow
import pytest
import torch

import tempme
from jobs.cli import main
from pipelines.model.registry import (
    NOT_ADAPTER_FILES,
    UnknownModel,
    build_model,
    open_model,
    promote,
    register_adapter,
    resolve_model,
)
from pipelines.tracking import get_or_create_experiment, resolve_tracking_uri


@pytest.fixture
def store(tmp_path):
    """A fresh SQLite tracking store under tmp_path, made current for this test only."""
    previous = mlflow.get_tracking_uri()
    uri = resolve_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=get_or_create_experiment("adapters", uri))
    yield uri
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    """A tiny model whose trainable tensors were changed (as if trained), saved as an adapter."""
    model = build_model("tempme-tiny-12f")
    with torch.no_grad():
        for i, p in enumerate(model.trainable_parameters().values()):
            p.fill_(0.01 * (i % 7 + 1))
    return model, model.save_adapter(tmp_path_factory.mktemp("adapter") / "tiny-adapter")


def _same_files(a, b):
    files = sorted(p.name for p in a.iterdir())
    return files == sorted(p.name for p in b.iterdir()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files)


def _registered_copy(downloaded, adapter):
    """A registered version, downloaded: the adapter's files unchanged, plus the pyfunc files (and MLflow's
    note of the version)."""
    extra = sorted(p.name for p in downloaded.iterdir() if not (adapter / p.name).exists())
    return extra == sorted(NOT_ADAPTER_FILES) and all(
        (downloaded / f.name).read_bytes() == f.read_bytes() for f in adapter.iterdir())


def test_register_resolve_and_embed(store, trained_adapter, tmp_path):
    model, adapter = trained_adapter
    with mlflow.start_run() as run:
        assert register_adapter(adapter, "tiny-retrieval", "candidate") == "1"
    assert register_adapter(adapter, "tiny-retrieval", "candidate") == "2"     # outside a run too

    by_alias, by_alias_dir = resolve_model("models:/tiny-retrieval@candidate", tmp_path / "a")
    assert (by_alias.name, by_alias.version) == ("tiny-retrieval", "2")
    assert _registered_copy(by_alias_dir, adapter)
    by_version, by_version_dir = resolve_model("models:/tiny-retrieval/1", tmp_path / "b")
    assert by_version.version == "1" and _registered_copy(by_version_dir, adapter)
    version = mlflow.MlflowClient().get_model_version("tiny-retrieval", "1")
    assert version.run_id == run.info.run_id

    loaded, resolved = open_model("models:/tiny-retrieval@candidate", tmp_path / "c")
    assert resolved.uri == "models:/tiny-retrieval/2" and loaded.config == model.config   # pinned
    for name, value in model.trainable_parameters().items():
        torch.testing.assert_close(loaded.trainable_parameters()[name], value)
    model.eval()
    video = torch.randn(1, 12, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = loaded.encode_video(video)
        torch.testing.assert_close(got, model.encode_video(video))   # same backbone, same adapter
        text = loaded.encode_text(["a red square moving left"])
    assert got.shape == text.shape and torch.allclose(got.norm(dim=-1), torch.ones(1))


def test_runs_uri_and_local_directory(store, trained_adapter, tmp_path):
    _, adapter = trained_adapter
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(adapter), "best_adapter")
    resolved, resolved_dir = resolve_model(f"runs:/{run.info.run_id}/best_adapter", tmp_path / "r")
    assert resolved.name == "best_adapter" and _same_files(resolved_dir, adapter)

    local, local_dir = resolve_model(str(adapter))
    assert local_dir == adapter.resolve() and local.name == "tiny-adapter"
    assert local.version == resolved.version and len(local.version) == 12   # the content hash
    copy = tmp_path / "changed"
    copy.mkdir()
    for f in adapter.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "adapter.safetensors").write_bytes(b"x" + (copy / "adapter.safetensors").read_bytes())
    assert resolve_model(str(copy))[0].version != local.version


def test_unknown_models_are_errors(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(UnknownModel, match="'models:/no-such-model@candidate'"):
        resolve_model("models:/no-such-model@candidate")
    with pytest.raises(ValueError, match="models:/<name>"):
        resolve_model("models:/just-a-name")


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory):
    """Two small random-weight adapters: what two training runs would register."""
    root = tmp_path_factory.mktemp("two")
    return [tempme.load_model("tempme-tiny-12f").save_adapter(root / f"run{i}") for i in (1, 2)]


def test_promote_moves_the_alias(store, two_adapters, tmp_path):
    first, second = two_adapters
    assert register_adapter(first, "tiny-promoted", "candidate") == "1"
    assert promote("models:/tiny-promoted@candidate", "champion") == "1"
    assert register_adapter(second, "tiny-promoted", "candidate") == "2"    # a new run: champion stays put
    client = mlflow.MlflowClient()

    def champion() -> str:
        return str(client.get_model_version_by_alias("tiny-promoted", "champion").version)

    assert champion() == "1"
    assert promote("models:/tiny-promoted@candidate", "champion") == "2"
    assert champion() == "2" and resolve_model("models:/tiny-promoted@champion", tmp_path / "p")[0].version == "2"
    assert promote("models:/tiny-promoted/1", "champion") == "1"             # roll back by version number
    assert champion() == "1"
    assert str(client.get_model_version_by_alias("tiny-promoted", "candidate").version) == "2"


def test_promote_names_a_uri_that_names_nothing(store, two_adapters):
    register_adapter(two_adapters[0], "tiny-bad", "candidate")
    for uri in ("models:/no-such-model@candidate", "models:/tiny-bad/7", "models:/tiny-bad@no-such-alias",
                "models:/tiny-bad/seven"):
        with pytest.raises(UnknownModel) as err:
            promote(uri, "champion")
        assert repr(uri) in str(err.value)
    with pytest.raises(ValueError, match="alias 'latest' cannot be set on 'tiny-bad'"):
        promote("models:/tiny-bad@candidate", "latest")          # reserved by the registry
    with pytest.raises(mlflow.MlflowException):                   # and nothing was set
        mlflow.MlflowClient().get_model_version_by_alias("tiny-bad", "champion")


def test_promote_command(store, two_adapters, capsys):
    register_adapter(two_adapters[0], "tiny-cli", "candidate")
    register_adapter(two_adapters[1], "tiny-cli", "candidate")
    assert main(["promote", "models:/tiny-cli@candidate", "--alias", "champion", "--tracking-uri", store]) == 0
    assert "version 2" in capsys.readouterr().out
    assert str(mlflow.MlflowClient().get_model_version_by_alias("tiny-cli", "champion").version) == "2"

    assert main(["promote", "models:/tiny-cli/9", "--alias", "champion", "--tracking-uri", store]) == 2
    assert "tempme promote: model URI 'models:/tiny-cli/9'" in capsys.readouterr().err
    assert main(["promote", "tiny-cli", "--alias", "champion", "--tracking-uri", store]) == 2
    assert "'tiny-cli' must look like models:/<name>@<alias>" in capsys.readouterr().err
