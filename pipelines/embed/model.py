"""Which model version embeds, and how its adapter reaches every embedding actor.

The driver resolves the URI once (registry alias -> version, download) and ships the adapter's few files as
bytes to the actors, so workers on other nodes need neither MLflow access nor a shared disk. The index
records a *pinned* URI that names exactly that version (`models:/<name>/<version>` rather than an alias,
which moves), so search can load the very model that embedded the index. Models are built the one way every
stage builds them, `pipelines.model_store.load_registered_model`, here always from a local adapter folder.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pipelines.index import ModelRef
from tempme.errors import UserError

REGISTRY_SCHEMES = ("models:/", "runs:/")


class ModelUnavailable(UserError):
    """A models:/ or runs:/ URI the MLflow store cannot serve; the message names the URI and the store."""


def resolve(uri: str, tracking_uri: str | None = None) -> tuple[ModelRef, Path]:
    """(pinned model reference, local adapter directory) for any adapter URI the model store accepts.

    models:/ and runs:/ URIs are looked up in `tracking_uri` (default: MLFLOW_TRACKING_URI, else ./mlflow.db),
    which must answer first (`TrackingUnavailable` otherwise, before any retrying MLflow call); a name,
    version, alias or run it does not hold is a ValueError naming the URI and the store."""
    from pipelines.model_store import resolve_model

    if not uri.startswith(REGISTRY_SCHEMES):
        resolved = resolve_model(uri)
        return ModelRef(resolved.name, resolved.version, str(resolved.adapter_dir)), resolved.adapter_dir
    import mlflow

    from pipelines.tracking import check_reachable, resolve_tracking_uri

    store = resolve_tracking_uri(tracking_uri)
    check_reachable(store)
    mlflow.set_tracking_uri(store)   # the model store reads the current tracking URI
    try:
        resolved = resolve_model(uri)     # an unknown name, version or alias: model_store.UnknownModel
    except mlflow.MlflowException as e:
        raise ModelUnavailable(f"model {uri} cannot be loaded from the MLflow store {store}: {e.message}") from None
    pinned = f"models:/{resolved.name}/{resolved.version}" if uri.startswith("models:/") else uri
    return ModelRef(resolved.name, resolved.version, pinned), resolved.adapter_dir


def adapter_files(adapter_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(adapter_dir).as_posix(): p.read_bytes() for p in adapter_dir.rglob("*") if p.is_file()}


def load_adapter(adapter_dir: str | Path):
    """The tempme model of a local adapter folder (preset, schedule and backbone as its config records)."""
    from pipelines.model_store import load_registered_model

    return load_registered_model(str(adapter_dir))[0].eval()


def load_from_files(files: dict[str, bytes]):
    """The tempme model of an adapter given as {relative path: bytes}, in eval mode."""
    with tempfile.TemporaryDirectory(prefix="tempme-adapter-") as tmp:
        for rel, data in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_bytes(data)
        return load_adapter(tmp)
