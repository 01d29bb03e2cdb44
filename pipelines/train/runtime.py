"""Per-worker device facts: the model built identically on every worker, autocast dtype, peak memory, and
whether collectives across workers are needed."""
from __future__ import annotations

import resource

import torch
import torch.distributed as dist

from pipelines.model import registry
from pipelines.train.config import TrainJobConfig
from tempme.precision import gpu_has_native_bf16

_AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def distributed() -> bool:
    """True inside a process group of more than one worker; a single worker skips every collective."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: `auto` is bf16 on a GPU that computes it natively, fp16 (with a gradient scaler) on
    an older GPU, and full fp32 on CPU (where bf16 autocast is slower)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if gpu_has_native_bf16(device) else torch.float16
    return _AMP[precision]


def training_model(cfg: TrainJobConfig, device: torch.device):
    """The preset with its pretrained weights, in train mode, the same on every worker.

    Random parts (LoRA A, random-weight tiny backbones) come from a fixed seed (`registry.build_model`);
    rank 0's trainable values are broadcast as well, as DDP would, so workers can never start apart.
    """
    model = registry.build_model(cfg.model.config, pretrained=cfg.model.pretrained, device=device)
    torch.manual_seed(cfg.train.seed)
    model.train()
    if distributed():
        with torch.no_grad():
            for param in model.trainable_parameters().values():
                dist.broadcast(param.data, src=0)
    return model


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this worker: allocated GPU memory on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
