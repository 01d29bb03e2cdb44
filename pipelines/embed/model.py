"""Which model version embeds, and how its adapter reaches every embedding actor.

The driver resolves the URI once (registry alias -> version, download) and ships the adapter's few files as
bytes to the actors, so workers on other nodes need neither MLflow access nor a shared disk. The index
records a *pinned* URI that names exactly that version (`models:/<name>/<version>` rather than an alias,
which moves), so search can load the very model that embedded the index.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pipelines.index import ModelRef


def resolve(uri: str, tracking_uri: str | None = None) -> tuple[ModelRef, Path]:
    """(pinned model reference, local adapter directory) for any adapter URI the model store accepts;
    models:/ and runs:/ URIs are looked up in `tracking_uri` (default: MLFLOW_TRACKING_URI, else ./mlflow.db)."""
    from pipelines.model_store import resolve_model

    if uri.startswith(("models:/", "runs:/")):
        import mlflow

        from pipelines.tracking import resolve_tracking_uri

        mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    resolved = resolve_model(uri)
    if uri.startswith("models:/"):
        pinned = f"models:/{resolved.name}/{resolved.version}"
    elif uri.startswith("runs:/"):
        pinned = uri
    else:
        pinned = str(resolved.adapter_dir)
    return ModelRef(resolved.name, resolved.version, pinned), resolved.adapter_dir


def adapter_files(adapter_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(adapter_dir).as_posix(): p.read_bytes() for p in adapter_dir.rglob("*") if p.is_file()}


def load_from_files(files: dict[str, bytes]):
    """The tempme model of an adapter given as {relative path: bytes}, in eval mode."""
    import tempme

    with tempfile.TemporaryDirectory(prefix="tempme-adapter-") as tmp:
        for rel, data in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_bytes(data)
        model = tempme.load_model(adapter=tmp)   # preset and backbone weights as the adapter records them
    return model.eval()
