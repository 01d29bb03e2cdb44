"""Registered adapters as MLflow pyfunc models, through a real SQLite registry: texts and frame arrays embedded
by `mlflow.pyfunc.load_model`, the same as the model's own encoders; `mlflow models serve` answering."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipelines.model.pyfunc_files import LOADER_MODULE, PYFUNC_FILES
from pipelines.model.registry import NOT_ADAPTER_FILES, build_model, open_model, register_adapter, resolve_model
from pipelines.shards.frames import normalise
from pipelines.tracking import get_or_create_experiment, resolve_tracking_uri
from tests.fixtures.servers import free_port

NAME = "tiny-pyfunc"
TEXTS = ["a red square moving left", "a blue circle grows", "two green triangles swap places"]
REPO = Path(__file__).resolve().parents[3]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"     # where the pyfunc model's device "auto" puts it


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One SQLite store for the module: version 1 of NAME (alias champion) a model whose trainable tensors were
    changed at random (as if trained), version 2 (alias candidate) a fresh one; and the first model in its
    inference form."""
    root = tmp_path_factory.mktemp("pyfunc")
    previous = mlflow.get_tracking_uri()
    uri = resolve_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_tracking_uri(uri)
    experiment = get_or_create_experiment("pyfunc", uri)
    mlflow.set_experiment(experiment_id=experiment)
    trained = build_model("tempme-tiny-12f")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():      # random, not constant: a constant LoRA product is cancelled by LayerNorm's centring
        for p in trained.trainable_parameters().values():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    adapter = trained.save_adapter(root / "trained")
    fresh = build_model("tempme-tiny-12f").save_adapter(root / "fresh")
    with mlflow.start_run():
        assert register_adapter(adapter, NAME, "champion") == "1"
    assert register_adapter(fresh, NAME, "candidate") == "2"
    reference = build_model("tempme-tiny-12f", adapter=adapter).to(DEVICE).for_inference("auto")
    try:
        yield SimpleNamespace(uri=uri, experiment=experiment, adapter=adapter, reference=reference, root=root)
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def champion(registry):
    return mlflow.pyfunc.load_model(f"models:/{NAME}@champion")


def _atol(dtype: torch.dtype) -> float:
    """How far two computations of the same embedding may differ in the inference dtype."""
    return 1e-5 if dtype == torch.float32 else 2e-2


def _close(got: np.ndarray, want: np.ndarray, dtype: torch.dtype):
    """Equal up to the inference dtype's rounding, and every row's cosine >= 0.999."""
    np.testing.assert_allclose(got, want, atol=_atol(dtype), rtol=0)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.999, cosine


def _encode_text(model, texts) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_text(texts).float().cpu().numpy()


def _encode_video(model, frames_nthwc: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the embedding stages do: uint8 [N,T,3,H,W] -> normalise -> encode_video with the CPU mask."""
    video = torch.from_numpy(frames_nthwc).permute(0, 1, 4, 2, 3).to(model.device)
    valid = torch.from_numpy(mask)
    with torch.inference_mode():
        return model.encode_video(normalise(video, valid), valid).float().cpu().numpy()


def _videos(n=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, 12, 224, 224, 3), dtype=np.uint8)
    mask = np.ones((n, 12), dtype=bool)
    if n > 1:
        mask[1, 7:] = False        # a short video: 7 real frames, then padding
    if n > 2:
        mask[2, 2:] = False
    return frames, mask


def test_texts_by_alias_and_version_match_the_model(registry, champion):
    got = champion.predict(pd.DataFrame({"text": TEXTS}))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(got[0], got[1], atol=1e-3)
    _close(got, _encode_text(registry.reference, TEXTS), registry.reference.dtype)

    # Every text input form gives the same rows.
    for same in (TEXTS, tuple(TEXTS), np.array(TEXTS), pd.Series(TEXTS), {"text": TEXTS}, {"text": np.array(TEXTS)},
                 pd.DataFrame({"id": [7, 8, 9], "text": TEXTS})):
        np.testing.assert_array_equal(champion.predict(same), got)
    np.testing.assert_array_equal(champion.predict(TEXTS[1]), got[1:2])

    by_version = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    np.testing.assert_array_equal(by_version.predict(pd.DataFrame({"text": TEXTS})), got)
    other = mlflow.pyfunc.load_model(f"models:/{NAME}@candidate").predict(TEXTS)   # version 2: another adapter
    assert other.shape == got.shape and not np.allclose(other, got, atol=1e-3)

    meta = champion.metadata
    assert meta.flavors["python_function"]["loader_module"] == LOADER_MODULE == "pipelines.model.pyfunc"
    out = meta.get_output_schema().inputs[0]
    assert out.type == np.dtype(np.float32) and out.shape == (-1, 64)
    assert meta.get_input_schema() is None         # inputs are checked by the model (see pipelines.model.pyfunc)
    assert champion.get_raw_model().lora_folded and not champion.get_raw_model().training   # inference form


def test_videos_as_frame_arrays_match_the_model(registry, champion):
    atol = _atol(registry.reference.dtype)
    frames, mask = _videos()
    got = champion.predict({"frames": frames, "mask": mask})
    assert got.dtype == np.float32 and got.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    want = _encode_video(registry.reference, frames, mask)
    _close(got, want, registry.reference.dtype)

    # Channels first is the same input; so are integer pixels (what JSON gives) and 0/1 masks.
    np.testing.assert_allclose(champion.predict({"frames": frames.transpose(0, 1, 4, 2, 3), "mask": mask}), got,
                               atol=atol)
    np.testing.assert_allclose(champion.predict({"frames": frames.astype(np.int64), "mask": mask.astype(int)}),
                               got, atol=atol)
    # Padding frames are masked out: what they hold does not matter, and without the mask they count.
    noisy = frames.copy()
    noisy[1, 7:] = 255 - noisy[1, 7:]
    np.testing.assert_allclose(champion.predict({"frames": noisy, "mask": mask}), got, atol=atol)
    unmasked = champion.predict({"frames": frames[:2]})
    np.testing.assert_allclose(unmasked[0], got[0], atol=atol)      # all frames real: no mask is a full mask
    assert not np.allclose(unmasked[1], got[1], atol=0.05)

    # Encoded a video at a time, the same embeddings.
    one_by_one = mlflow.pyfunc.load_model(f"models:/{NAME}@champion", model_config={"video_batch": 1})
    np.testing.assert_allclose(one_by_one.predict({"frames": frames, "mask": mask}), got, atol=atol)


def test_the_registered_version_is_still_an_adapter_directory(registry, champion, tmp_path):
    resolved, resolved_dir = resolve_model(f"models:/{NAME}@champion", tmp_path / "r")
    assert (resolved.name, resolved.version) == (NAME, "1")
    adapter_files = sorted(p.name for p in registry.adapter.iterdir())
    names = sorted(p.name for p in resolved_dir.iterdir())
    assert names == sorted([*adapter_files, *NOT_ADAPTER_FILES]) and set(PYFUNC_FILES) <= set(names)
    for name in adapter_files:
        assert (resolved_dir / name).read_bytes() == (registry.adapter / name).read_bytes()
    # A downloaded version hashes as the adapter it came from, so a local path names the same version.
    assert resolve_model(str(resolved_dir))[0].version == resolve_model(str(registry.adapter))[0].version

    loaded, by_version = open_model(f"models:/{NAME}/1", tmp_path / "l")
    assert by_version.version == "1"
    loaded.to(DEVICE).for_inference("auto")
    atol = _atol(loaded.dtype)
    np.testing.assert_allclose(champion.predict(TEXTS), _encode_text(loaded, TEXTS), atol=atol)
    # The downloaded folder is itself a pyfunc model.
    np.testing.assert_allclose(mlflow.pyfunc.load_model(str(resolved_dir)).predict(TEXTS),
                               champion.predict(TEXTS), atol=atol)

    env = yaml.safe_load((resolved_dir / "python_env.yaml").read_text())
    assert env["dependencies"] == ["-r requirements.txt"]
    pins = (resolved_dir / "requirements.txt").read_text()
    assert f"mlflow=={mlflow.__version__}" in pins and f"torch=={torch.__version__.split('+')[0]}" in pins


def test_registering_a_downloaded_version_writes_its_own_mlmodel(registry, tmp_path):
    resolved, resolved_dir = resolve_model(f"models:/{NAME}/1", tmp_path / "d")
    assert register_adapter(resolved_dir, f"{NAME}-copy", "champion") == "1"
    copy, copy_dir = resolve_model(f"models:/{NAME}-copy/1", tmp_path / "c")
    written = yaml.safe_load((copy_dir / "MLmodel").read_text())
    version = mlflow.MlflowClient().get_model_version(f"{NAME}-copy", "1")
    assert version.source == f"models:/{written['model_id']}"            # the new logged model's own id
    assert written["model_id"] != yaml.safe_load((resolved_dir / "MLmodel").read_text())["model_id"]
    assert yaml.safe_load((copy_dir / "registered_model_meta").read_text())["model_name"] == f"{NAME}-copy"
    assert copy.version == "1" and resolve_model(str(copy_dir))[0].version == resolve_model(
        str(registry.adapter))[0].version


def test_bad_inputs_say_what_is_wrong(registry, champion):
    with pytest.raises(ValueError, match=r"no 'text' column \(its columns: \['caption'\]\)"):
        champion.predict(pd.DataFrame({"caption": TEXTS}))
    for empty in ([], pd.DataFrame({"text": []}), {"text": []}, np.array([], dtype=str)):
        with pytest.raises(ValueError, match="no texts to encode"):
            champion.predict(empty)
    with pytest.raises(ValueError, match=r"texts must be strings; entries \[1\]"):
        champion.predict(["a red square", None])
    with pytest.raises(ValueError, match=r"must not be blank; entries \[0\]"):
        champion.predict(["  ", "a red square"])
    with pytest.raises(ValueError, match="expected a 'text' key .* or a 'frames' key"):
        champion.predict({"video": 1})
    with pytest.raises(ValueError, match="not both"):
        champion.predict({"text": TEXTS, "frames": _videos(1)[0]})

    frames, mask = _videos(2)
    with pytest.raises(ValueError, match="8 frame slots per video, the model takes 12"):
        champion.predict({"frames": frames[:, :8]})
    with pytest.raises(ValueError, match="frames are 112x112, the model takes 224x224"):
        champion.predict({"frames": frames[:, :, :112, :112]})
    with pytest.raises(ValueError, match="uint8 pixel values 0-255"):
        champion.predict({"frames": frames.astype(np.float32) / 255})
    with pytest.raises(ValueError, match=r"shape \(2, 12, 224, 224\)"):
        champion.predict({"frames": frames[..., 0]})
    with pytest.raises(ValueError, match=r"'mask' must be \[videos, frames\] = \(2, 12\)"):
        champion.predict({"frames": frames, "mask": mask[:, :5]})
    mask[1] = False
    with pytest.raises(ValueError, match=r"leaves videos \[1\] without any real frame"):
        champion.predict({"frames": frames, "mask": mask})


def test_registering_something_that_is_not_an_adapter_logs_nothing(registry, tmp_path):
    def logged() -> int:
        return len(mlflow.search_logged_models(experiment_ids=[registry.experiment], output_format="list"))

    before = logged()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an adapter")
    with pytest.raises(FileNotFoundError, match="not an adapter directory"):
        register_adapter(tmp_path / "notes", f"{NAME}-bad", "champion")
    assert logged() == before



def _post(url: str, payload: dict, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture
def served(registry, tmp_path):
    """`mlflow models serve` of version 1 in a subprocess (its own process group); the URL once /ping answers.
    Always stopped afterwards."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    # The venv's bin first, as an activated venv has it: the server runs its `uvicorn` from the PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.uri,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}/1", "--env-manager",
               "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not answer /ping in 240 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_text_embeddings(served, champion):
    want, atol = champion.predict(TEXTS), _atol(champion.get_raw_model().dtype)
    status, body = _post(f"{served}/invocations",
                         {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}})
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"], dtype=np.float32), want, atol=atol)
    status, body = _post(f"{served}/invocations", {"inputs": {"text": TEXTS[:2]}})
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"], dtype=np.float32), want[:2], atol=atol)

    status, body = _post(f"{served}/invocations", {"dataframe_split": {"columns": ["caption"], "data": [["x"]]}})
    assert status == 400 and "no 'text' column" in json.dumps(body)
