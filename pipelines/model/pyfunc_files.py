"""The pyfunc files that make a registered adapter directory an MLflow pyfunc model (`MLmodel`, naming
`pipelines.model.pyfunc` as its loader, and the environment files), written by the registry
(`pipelines.model.registry.register_adapter`) beside the adapter files."""
from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

import numpy as np
import yaml

import tempme

LOADER_MODULE = "pipelines.model.pyfunc"   # MLflow imports it to load the model
DEFAULT_CONFIG = {"device": "auto", "precision": "auto", "text_batch": 256, "video_batch": 8}
MLMODEL_FILE = "MLmodel"
CONDA_FILE = "conda.yaml"
PYTHON_ENV_FILE = "python_env.yaml"
REQUIREMENTS_FILE = "requirements.txt"
PYFUNC_FILES = (MLMODEL_FILE, CONDA_FILE, PYTHON_ENV_FILE, REQUIREMENTS_FILE)
# What loading and predicting import, pinned at the installed versions (the project itself is not a
# package index distribution: it must be importable where the model is served).
REQUIREMENTS = ("mlflow", "torch", "torchvision", "open_clip_torch", "peft", "safetensors", "numpy", "pandas",
                "pyarrow")
INPUTS = ("texts: a DataFrame column 'text' or a list of strings; videos: {'frames': uint8 [N, T, H, W, 3] or "
          "[N, T, 3, H, W], 'mask': bool [N, T]}")


def _versions(names) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_pyfunc_files(directory: str | Path, *, model_id: str | None = None, run_id: str | None = None,
                       artifact_path: str | None = None) -> Path:
    """Make the adapter directory `directory` an MLflow pyfunc model in place: write MLmodel (loader
    `pipelines.model.pyfunc`, output signature float32 [-1, D], default loading options) and the environment
    files next to the adapter files, replacing earlier ones. `model_id`/`run_id`/`artifact_path`: the logged model's."""
    import mlflow
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    directory = Path(directory)
    config = tempme.read_adapter_config(directory)       # refuses anything that is not an adapter directory
    dim = config.embed_dim
    signature = ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim), "embedding")]))
    ids = {"model_uuid": model_id, "model_id": model_id} if model_id else {}
    model = Model(artifact_path=artifact_path, run_id=run_id, signature=signature,
                  metadata={"tempme_preset": config.name, "embedding_dim": dim, "inputs": INPUTS}, **ids)
    mlflow.pyfunc.add_to_model(model, loader_module=LOADER_MODULE, conda_env=CONDA_FILE,
                               python_env=PYTHON_ENV_FILE, model_config=dict(DEFAULT_CONFIG))

    pins = [f"{name}=={version}" for name, version in _versions(REQUIREMENTS).items()]
    (directory / REQUIREMENTS_FILE).write_text(
        "# The tempme project (packages tempme and pipelines) must be importable too: serve with\n"
        "# `mlflow models serve --env-manager local` from the project's environment.\n" + "\n".join(pins) + "\n")
    build = [f"{name}=={version}" for name, version in _versions(("pip", "setuptools", "wheel")).items()]
    python = platform.python_version()
    (directory / PYTHON_ENV_FILE).write_text(yaml.safe_dump(
        {"python": python, "build_dependencies": build or ["pip"], "dependencies": [f"-r {REQUIREMENTS_FILE}"]},
        sort_keys=False))
    (directory / CONDA_FILE).write_text(yaml.safe_dump(
        {"name": "mlflow-env", "channels": ["conda-forge"],
         "dependencies": [f"python={python}", "pip", {"pip": pins}]}, sort_keys=False))
    model.model_size_bytes = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    model.save(str(directory / MLMODEL_FILE))
    return directory
