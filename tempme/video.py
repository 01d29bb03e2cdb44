"""The TempMe video encoder: a CLIP ViT run over all frames of a video with temporal token merging.

Frames of one video are contiguous and in order. ImgMe layers merge inside each frame after attention;
ClipMe layers first join M adjacent clips into one sequence `[their CLS tokens, their patches]`, add a
clip positional embedding per frame slot and merge across the joined clip (metric: the hidden state from
before that addition, detached), then attend and merge inside the clip. CLS tokens (one per input frame)
are never merged; the video embedding is the mean of their normalised projections over valid frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tempme.config import MergeSchedule
from tempme.layer_plan import plan_layers
from tempme.merge import bipartite_soft_matching


@dataclass
class VideoEncoding:
    embedding: torch.Tensor                   # [B, D] L2-normalised video embeddings
    frame_embeddings: torch.Tensor            # [B, T, D] L2-normalised per-frame (CLS) embeddings
    # (sequences per video, tokens) entering each layer's attention
    layer_shapes: list[tuple[int, int]] = field(default_factory=list)
    # [B, final tokens, T*N0]: input patches behind each final token (trace=True)
    source: torch.Tensor | None = None


def _regroup(t: torch.Tensor, videos: int, join: int, cls: int) -> torch.Tensor:
    """[videos*seqs, L, C] -> [videos*seqs/join, join*L, C] laid out as [all CLS tokens, all patches]."""
    total, length, channels = t.shape
    t = t.view(videos, total // (videos * join), join, length, channels)
    new = t.shape[1]
    head = t[:, :, :, :cls].reshape(videos * new, join * cls, channels)
    tail = t[:, :, :, cls:].reshape(videos * new, join * (length - cls), channels)
    return torch.cat([head, tail], dim=1)


class VideoEncoder(nn.Module):
    def __init__(self, visual: nn.Module, schedule: MergeSchedule, frames: int):
        super().__init__()
        self.visual = visual
        self.schedule = schedule
        self.frames = frames
        width = visual.conv1.out_channels
        # The merge plan is fixed by the frame count, so the forward pass follows plain integers.
        self.plans = plan_layers(schedule, len(visual.transformer.resblocks), frames, self.tokens_per_frame)
        # One trainable embedding per frame slot of each ClipMe layer, starting at zero.
        self.clip_pos = nn.ParameterDict({
            str(layer): nn.Parameter(torch.zeros(self.plans[layer].seqs * self.plans[layer].join, width))
            for layer in schedule.clipme_layers
        })

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else size

    @property
    def tokens_per_frame(self) -> int:
        return self.visual.positional_embedding.shape[0]

    def _embed_patches(self, frames: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(frames).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(v.patch_dropout(x))

    def check_input(self, video: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Shapes only: plain integers, free on any device. Videos without frames are found by `check_mask`,
        which `TempMeModel.encode_video` runs on the CPU before the mask moves to the device."""
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be [B, T, 3, H, W], got shape {tuple(video.shape)}")
        batch, frames, _, height, width = video.shape
        if (height, width) != (self.image_size, self.image_size):
            raise ValueError(f"frames must be {self.image_size}x{self.image_size}, got {height}x{width}")
        if frames != self.frames:
            raise ValueError(f"this model encodes {self.frames} frames per video, got {frames}")
        if mask is not None:
            if mask.shape != (batch, frames):
                raise ValueError(f"mask must be [B, T] = {(batch, frames)}, got {tuple(mask.shape)}")

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """video [B, T, 3, H, W] (CLIP-normalised), mask [B, T] (True = real frame) or None -> [B, D]
        L2-normalised video embeddings. The hot path: free of host synchronisations, it compiles into one
        graph (`torch.compile(encoder, fullgraph=True)`)."""
        self.check_input(video, mask)
        return self._run(video, mask, trace=False)[0]

    def encode(self, video: torch.Tensor, mask: torch.Tensor | None = None, trace: bool = False) -> VideoEncoding:
        """Like `forward`, with per-frame embeddings, per-layer token shapes and, if traced, merge sources."""
        self.check_input(video, mask)
        video_emb, frame_emb, shapes, source = self._run(video, mask, trace)
        return VideoEncoding(video_emb, frame_emb, shapes, source)

    def _run(self, video, mask, trace):
        batch, frames, _, height, width = video.shape
        x = self._embed_patches(video.reshape(batch * frames, 3, height, width))
        size = None
        source = None
        if trace:
            n0 = x.shape[1]
            source = torch.eye(frames * n0, device=x.device).view(frames * n0, frames, n0)
            source = source.permute(1, 2, 0).repeat(batch, 1, 1)                 # [B*T, N0, T*N0]
        shapes = []
        for layer, (block, plan) in enumerate(zip(self.visual.transformer.resblocks, self.plans)):
            if plan.join > 1:
                x, size, source = self._join_clips(layer, plan, batch, x, size, source)
            shapes.append((plan.seqs, x.shape[1]))
            attended, keys = block.attn(block.ln_1(x), size=size, want_keys=plan.r_after > 0)
            x = x + block.ls_1(attended)
            if plan.r_after:
                x, size, source = self._merge(keys, plan.r_after, plan.cls, x, size, source)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))

        cls_tokens = x[:, : self.plans[-1].cls].reshape(batch, frames, -1)
        # Embeddings are normalised and returned in float32 whatever the encoder's dtype.
        frame_emb = F.normalize((self.visual.ln_post(cls_tokens) @ self.visual.proj).float(), dim=-1)
        weights = torch.ones(batch, frames, 1, device=x.device, dtype=frame_emb.dtype) if mask is None \
            else mask.to(frame_emb.dtype)[..., None]
        video_emb = F.normalize((frame_emb * weights).sum(1) / weights.sum(1), dim=-1)
        if source is not None:
            source = source.reshape(batch, -1, source.shape[-1])
        return video_emb, frame_emb, shapes, source

    def _join_clips(self, layer, plan, batch, x, size, source):
        cls = plan.cls // plan.join
        metric = _regroup(x.detach(), batch, plan.join, cls)
        pos = self.clip_pos[str(layer)].to(x.dtype)
        x = (x.view(batch, pos.shape[0], x.shape[1], x.shape[2]) + pos[None, :, None, :]).flatten(0, 1)
        x = _regroup(x, batch, plan.join, cls)
        if size is not None:
            size = _regroup(size, batch, plan.join, cls)
        if source is not None:
            source = _regroup(source, batch, plan.join, cls)
        return self._merge(metric, plan.r_cross, plan.cls, x, size, source)

    @staticmethod
    def _merge(metric, r, cls, x, size, source):
        if r == 0:
            return x, size, source
        matching = bipartite_soft_matching(metric, r, cls)
        if size is None:
            size = x.new_ones(x.shape[0], x.shape[1], 1)
        x, size = matching.merge_weighted(x, size)
        if source is not None:
            source = matching.merge_sum(source)
        return x, size, source


def check_mask(mask: torch.Tensor) -> None:
    """A mask [B, T] must leave every video at least one real frame (reads the mask: a sync on a GPU)."""
    empty = (~mask.bool()).all(dim=1).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"videos {empty} of the batch have zero valid frames")
