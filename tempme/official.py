"""Import a checkpoint trained with the authors' TempMe code into this project's adapter format.

Their state dicts name the trained entries `clip.visual.transformer.resblocks.{i}.attn.TVPt_LoRA_a` (r x width)
and `..._b` (3*width x r), the same under `clip.transformer.` for text, and
`clip.visual.transformer.resblocks.{layer}.TVPt_Video_Positional_embedding` (1 x slots x 1 x width) for the
ClipMe layers. Their LoRA delta `x @ A.T @ B.T` is peft's `lora_B(lora_A(x))` at scale 1, so the
matrices map one to one.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from tempme.adapter import save_adapter
from tempme.backbone import CheckpointError, read_state_dict
from tempme.config import ModelConfig
from tempme.model import TempMeModel

_LORA = re.compile(r"^clip\.(visual\.)?transformer\.resblocks\.(\d+)\.attn\.TVPt_LoRA_([ab])$")
_POS = re.compile(r"^clip\.visual\.transformer\.resblocks\.(\d+)\.TVPt_Video_Positional_embedding$")


def official_to_adapter_names(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and reshape) the authors' trained entries to this project's parameter names."""
    out = {}
    for key, value in official.items():
        if match := _LORA.match(key):
            visual, layer, which = match.groups()
            encoder = "video.visual" if visual else "text"
            out[f"{encoder}.transformer.resblocks.{layer}.attn.qkv.lora_{which.upper()}.default.weight"] = value
        elif match := _POS.match(key):
            out[f"video.clip_pos.{match.group(1)}"] = value.reshape(value.shape[1], value.shape[-1])
    return out


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The trained TVPt_* entries of an authors' checkpoint, under their original names."""
    state = read_state_dict(path)
    trained = {k: v for k, v in state.items() if "TVPt_" in k}
    if not trained:
        raise CheckpointError(f"{path}: no TempMe entries (keys containing 'TVPt_'); "
                              f"this is not a checkpoint of the authors' TempMe code")
    return trained


def import_official(path: str | Path, config: ModelConfig, out_dir: str | Path) -> Path:
    """Convert the authors' checkpoint at `path` into an adapter directory for `config`."""
    model = TempMeModel(config.replace(pretrained=None))  # only the parameter names and shapes are needed
    own = model.trainable_parameters()
    converted = official_to_adapter_names(read_official_checkpoint(path))
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit preset {config.name!r}: "
                              f"{len(missing)} entries missing (e.g. {missing[:2]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    wrong = [f"{k} {tuple(converted[k].shape)} != {tuple(own[k].shape)}"
             for k in sorted(own) if converted[k].shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: shapes do not fit preset {config.name!r}: {', '.join(wrong[:3])}")
    with torch.no_grad():
        for name, param in own.items():
            param.copy_(converted[name])
    return save_adapter(out_dir, config, own)
