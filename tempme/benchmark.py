"""Video-encoder throughput of several models side by side, measured in interleaved rounds.

Merging cost does not depend on training, so random weights and inputs are used. Each round times every
model once on the same batch; rounds interleave so that load changes on the machine hit all models alike,
and the median round is reported. Warm-up rounds (allocator, kernel selection, compilation) are excluded.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Throughput:
    name: str
    videos_per_s: float
    seconds_per_batch: list[float]


def measure_side_by_side(encoders: dict[str, Callable[[torch.Tensor], torch.Tensor]], video: torch.Tensor,
                         rounds: int = 5, warmup: int = 2) -> list[Throughput]:
    """Median videos/s of each encoder over `rounds` interleaved rounds on the batch `video`."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    with torch.inference_mode():
        for round_ in range(warmup + rounds):
            for name, encode in encoders.items():
                _synchronize(video.device)
                start = time.perf_counter()
                encode(video)
                _synchronize(video.device)
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    return [Throughput(name, video.shape[0] / statistics.median(t), t) for name, t in times.items()]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
