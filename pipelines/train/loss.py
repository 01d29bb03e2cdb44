"""Symmetric InfoNCE over the global batch of every worker, as the paper trains.

Each worker gathers the text and video features of all workers, keeping the autograd graph only for its own
rows. The loss is the same number on every worker; the gradient each worker computes is the part that flows
through its own features, so summing the workers' gradients (`all_reduce_gradients`) gives exactly the
gradient of the global loss. The authors' DDP averaged it over their 4 GPUs instead, that is divided it by 4
before clipping; `average_over` does the same for any number of workers. Local batches may differ in size
(the last steps of an epoch) or be empty.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipelines.train.runtime import distributed


def gather_with_local_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All workers' rows of `local` [n, D] stacked in rank order; returns (all rows, offset of this worker's).

    Rows of other workers are detached; this worker's rows are the autograd-tracked `local` itself.
    """
    if not distributed():
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([local.shape[0]], device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    padded = torch.zeros(longest, *local.shape[1:], dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    rows = [local if r == rank else parts[r][: sizes[r]] for r in range(world)]
    return torch.cat(rows), sum(sizes[:rank])


def symmetric_infonce(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Mean of text-to-video and video-to-text cross-entropy; row i of each is a matching (caption, video) pair.

    `text` and `video` are L2-normalised [B, D] features of the whole (gathered) batch.
    """
    if text.shape[0] == 0:
        return text.sum() * 0.0
    logits = logit_scale * text @ video.t()
    target = torch.arange(text.shape[0], device=text.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def global_contrastive_loss(text: torch.Tensor, video: torch.Tensor,
                            logit_scale: torch.Tensor | float) -> tuple[torch.Tensor, int]:
    """The symmetric InfoNCE of the global batch; returns (loss, global batch size)."""
    all_text, _ = gather_with_local_grad(text)
    all_video, _ = gather_with_local_grad(video)
    return symmetric_infonce(all_text, all_video, logit_scale), all_text.shape[0]


def all_reduce_gradients(params: list[torch.nn.Parameter], average_over: int = 1) -> None:
    """Sum the workers' gradients in one flat all-reduce (parameters without a gradient count as zero), then
    divide by `average_over` (the authors' 4: DDP's average over their 4 GPUs)."""
    if distributed():
        _sum_over_workers(params)
    if average_over != 1:
        for p in params:
            if p.grad is not None:
                p.grad.div_(average_over)


def _sum_over_workers(params: list[torch.nn.Parameter]) -> None:
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
        offset += n
