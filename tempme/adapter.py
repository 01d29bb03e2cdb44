"""LoRA through peft on every fused `qkv` projection, and the adapter files that hold what was trained.

An adapter directory holds `adapter.safetensors` (the LoRA matrices and clip positional embeddings, a few MB)
and `tempme_config.json` (the ModelConfig needed to rebuild the model around them). Reading one never
unpickles anything.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file
from torch import nn

from tempme.config import ModelConfig
from tempme.errors import NotFound, UserError

WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "tempme_config.json"
FORMAT_VERSION = 1


def add_lora(module: nn.Module, rank: int, alpha: float | None) -> None:
    """Inject LoRA (A random, B zero) into every `qkv` Linear of `module`; only LoRA weights train."""
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=0.0,
                        target_modules=["qkv"], bias="none")
    inject_adapter_in_model(config, module)
    for name, param in module.named_parameters():
        param.requires_grad_("lora_" in name)


def save_adapter(directory: str | Path, config: ModelConfig, tensors: dict[str, torch.Tensor]) -> Path:
    """Write the adapter atomically: files land under a temporary name, then the directory is renamed."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / WEIGHTS_FILE))
    (staging / CONFIG_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **config.to_dict()}, indent=2))
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        os.replace(directory, old)
        os.replace(staging, directory)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        os.replace(staging, directory)
    return directory


def read_adapter_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise NotFound(f"{directory}: not an adapter directory (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise UserError(f"{path}: adapter format version {version!r}, expected {FORMAT_VERSION}")
    return ModelConfig.from_dict(data)


def read_adapter_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise NotFound(f"{directory}: not an adapter directory (no {WEIGHTS_FILE})")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from exc
