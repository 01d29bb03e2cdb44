"""The paper's optimiser: AdamW on the trainable parameters, cosine decay after a linear warm-up."""
from __future__ import annotations

import math

import torch

from pipelines.train.config import OptimSection


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimSection) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor at `step`: 0 -> 1 linearly over the warm-up, then cosine down to 0 at the end."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                       warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = int(total_steps * warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
