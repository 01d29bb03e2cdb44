"""The frozen CLIP backbone: an open_clip model built from config, weights from the hub or a local file.

Local files are read with `weights_only` loading (no arbitrary unpickling): the OpenAI `.pt` archive
(TorchScript) or state dict, an open_clip checkpoint (`{"state_dict": ...}`, `module.` prefixes), or
safetensors. Whatever is wrong with a file is reported with its path.
"""
from __future__ import annotations

import contextlib
import logging
import zipfile
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file
from torch import nn

from tempme.attention import fuse_attention
from tempme.config import BACKBONE_CONFIGS
from tempme.errors import UserError

open_clip.add_model_config(BACKBONE_CONFIGS)

# Entries some checkpoints carry that are not parameters of the model.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointError(UserError):
    """A weights file that is missing, unreadable or of the wrong layout."""


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        try:  # OpenAI's TorchScript archive: its tensors, not its code
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:
            raise CheckpointError(f"{path}: not a loadable TorchScript archive ({exc})") from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint that loads without unpickling code "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A CLIP state dict in the OpenAI/open_clip key layout, from any of the supported file kinds."""
    path = Path(path)
    data = _read_file(path)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(data).__name__}")
    if all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return {k: v for k, v in data.items() if k not in _NON_PARAMETER_KEYS}


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local CLIP checkpoint into `model`, naming the file and the keys that do not fit."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        def show(keys):
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} keys ({show(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({show(unexpected)})")
        if wrong_shape:
            problems.append(
                f"wrong shapes for "
                f"{show([f'{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}' for k in wrong_shape])}"
            )
        raise CheckpointError(f"{path}: not a checkpoint of this backbone: " + "; ".join(problems))
    model.load_state_dict(state)


@contextlib.contextmanager
def _random_on_purpose():
    """Drop open_clip's warning (on the root logger) that the model it builds has random weights: here they
    were asked for, or a file's weights are loaded next."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def create_backbone(backbone: str, pretrained: str | None, quick_gelu: bool) -> nn.Module:
    """An open_clip CLIP with fused attention, frozen, in eval mode.

    `pretrained`: None (random weights), an open_clip pretrained tag such as "openai" (downloads when
    online), or a path to a local checkpoint.
    """
    if backbone not in open_clip.list_models():
        raise UserError(f"unknown open_clip backbone {backbone!r}")
    is_file = pretrained is not None and (Path(pretrained).suffix or "/" in pretrained or Path(pretrained).exists())
    if pretrained is not None and not is_file:
        model = open_clip.create_model(backbone, pretrained=pretrained, force_quick_gelu=quick_gelu)
    else:
        # Random weights are a fixed function of the backbone name, so that every process of a job (training
        # workers, embedding actors, a search client) builds the same model without sharing a file.
        with torch.random.fork_rng(devices=[]), _random_on_purpose():
            torch.manual_seed(0)
            model = open_clip.create_model(backbone, force_quick_gelu=quick_gelu)
        if is_file:
            load_weights(model, pretrained)
    fuse_attention(model.visual.transformer)
    fuse_attention(model.transformer)
    model.requires_grad_(False)
    return model.eval()
