"""Training checkpoints: the adapter plus what it takes to continue, written atomically, a few MB.

    <checkpoint>/adapter/      model.save_adapter: LoRA, clip positional embeddings, model config
    <checkpoint>/state.pt      optimiser, learning-rate scheduler and (fp16) grad-scaler state
    <checkpoint>/progress.json step, epoch and corrupt samples met (`TrainState`)

The frozen backbone is never saved. Files are staged in a temporary folder that is renamed into place, so a
worker killed while writing leaves either the whole checkpoint or none; Ray Train then copies it to storage
and registers it only once every worker has reported.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pipelines.train.reports import ADAPTER

STATE = "state.pt"
TRAIN_STATE = "progress.json"   # its name from before `TrainState`: older checkpoints still resume


@dataclass
class TrainState:
    """Where training stands: optimiser steps taken, the epoch they are in, and the corrupt samples met so far
    ("step N: tar, bytes"), so that a restarted run keeps counting them towards `data.max_corrupt`."""

    step: int = 0
    epoch: int = 0
    corrupt: list[str] = field(default_factory=list)


def save_checkpoint(directory: str | Path, model, optimizer, lr_scheduler, scaler, state: TrainState) -> Path:
    """Write a whole checkpoint at `directory` (replacing nothing: it must not exist yet)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_adapter(staging / ADAPTER)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": lr_scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None}, staging / STATE)
        (staging / TRAIN_STATE).write_text(json.dumps(asdict(state), indent=2))
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_train_state(directory: str | Path) -> TrainState:
    return TrainState(**json.loads((Path(directory) / TRAIN_STATE).read_text()))


def load_checkpoint(directory: str | Path, model, optimizer, lr_scheduler, scaler) -> TrainState:
    """Restore the adapter and the optimiser, learning-rate scheduler and scaler state; returns the saved
    `TrainState`."""
    directory = Path(directory)
    model.load_adapter(directory / ADAPTER)
    state = torch.load(directory / STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    return read_train_state(directory)
