"""How the embedding job's model reaches every actor.

The driver opens the URI once (`registry.resolve_model`: registry alias -> pinned version, download) and
ships the adapter's few files as bytes to the actors, so workers on other nodes need neither MLflow access
nor a shared disk. The index records the pinned reference, so search loads the very version that embedded it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pipelines.model.registry import model_from_adapter


def adapter_files(adapter_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(adapter_dir).as_posix(): p.read_bytes() for p in adapter_dir.rglob("*") if p.is_file()}


def load_from_files(files: dict[str, bytes]):
    """The tempme model of an adapter given as {relative path: bytes}, in eval mode."""

    with tempfile.TemporaryDirectory(prefix="tempme-adapter-") as tmp:
        for rel, data in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_bytes(data)
        return model_from_adapter(tmp)
