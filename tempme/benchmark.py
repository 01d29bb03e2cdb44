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
    first_call_s: float           # the first call alone: set-up, and compilation for a compiled encoder


def measure_side_by_side(encoders: dict[str, Callable[[torch.Tensor], torch.Tensor]], video: torch.Tensor,
                         rounds: int = 5, warmup: int = 2) -> list[Throughput]:
    """Median videos/s of each encoder over `rounds` interleaved rounds on the batch `video`."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    first: dict[str, float] = {}
    with torch.inference_mode():
        for round_ in range(warmup + rounds):
            for name, encode in encoders.items():
                _synchronize(video.device)
                start = time.perf_counter()
                encode(video)
                _synchronize(video.device)
                if round_ == 0:
                    first[name] = time.perf_counter() - start
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    return [Throughput(name, video.shape[0] / statistics.median(t), t, first[name]) for name, t in times.items()]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gmacs_per_s(m: int, k: int, n: int, device: torch.device, dtype: torch.dtype,
                       rounds: int = 5) -> float:
    """GMAC/s of one plain [m, k] x [k, n] matrix product in `dtype`: the peak an encoder is measured against."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    times = []
    with torch.inference_mode():
        for round_ in range(rounds + 2):
            _synchronize(device)
            start = time.perf_counter()
            a @ b
            _synchronize(device)
            if round_ >= 2:
                times.append(time.perf_counter() - start)
    return m * k * n / statistics.median(times) / 1e9


def peak_memory_per_video(encode: Callable[[torch.Tensor], torch.Tensor], video: torch.Tensor) -> float | None:
    """MB of GPU memory one forward pass takes per video above what was allocated before it (None on CPU,
    where no allocator keeps a peak: `tempme bench model --memory` measures CPU memory in child processes)."""
    if video.device.type != "cuda":
        return None
    torch.cuda.synchronize(video.device)
    torch.cuda.reset_peak_memory_stats(video.device)
    before = torch.cuda.memory_allocated(video.device)
    with torch.inference_mode():
        encode(video)
    torch.cuda.synchronize(video.device)
    return (torch.cuda.max_memory_allocated(video.device) - before) / 2**20 / video.shape[0]
