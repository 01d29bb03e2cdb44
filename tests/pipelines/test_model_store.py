"""Adapters through a real MLflow SQLite registry: register, resolve every URI kind, load and embed."""
import mlflow
import pytest
import torch

from pipelines.model_store import build_model, load_registered_model, register_adapter, resolve_model
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


def test_register_resolve_and_embed(store, trained_adapter, tmp_path):
    model, adapter = trained_adapter
    with mlflow.start_run() as run:
        assert register_adapter(adapter, "tiny-retrieval", "candidate") == "1"
    assert register_adapter(adapter, "tiny-retrieval", "candidate") == "2"     # outside a run too

    by_alias = resolve_model("models:/tiny-retrieval@candidate", tmp_path / "a")
    assert (by_alias.name, by_alias.version) == ("tiny-retrieval", "2")
    assert _same_files(by_alias.adapter_dir, adapter)
    by_version = resolve_model("models:/tiny-retrieval/1", tmp_path / "b")
    assert by_version.version == "1" and _same_files(by_version.adapter_dir, adapter)
    version = mlflow.MlflowClient().get_model_version("tiny-retrieval", "1")
    assert version.run_id == run.info.run_id

    loaded, resolved = load_registered_model("models:/tiny-retrieval@candidate", tmp_path / "c")
    assert resolved.uri == "models:/tiny-retrieval@candidate" and loaded.config == model.config
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
    resolved = resolve_model(f"runs:/{run.info.run_id}/best_adapter", tmp_path / "r")
    assert resolved.name == "best_adapter" and _same_files(resolved.adapter_dir, adapter)

    local = resolve_model(str(adapter))
    assert local.adapter_dir == adapter.resolve() and local.name == "tiny-adapter"
    assert local.version == resolved.version and len(local.version) == 12   # the content hash
    copy = tmp_path / "changed"
    copy.mkdir()
    for f in adapter.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "adapter.safetensors").write_bytes(b"x" + (copy / "adapter.safetensors").read_bytes())
    assert resolve_model(str(copy)).version != local.version


def test_unknown_models_are_errors(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(mlflow.MlflowException):
        resolve_model("models:/no-such-model@candidate")
    with pytest.raises(ValueError, match="models:/<name>"):
        resolve_model("models:/just-a-name")
