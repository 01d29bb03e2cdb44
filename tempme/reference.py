"""A second, independent implementation of the TempMe video encoder, in the shape of the authors' code.

It reads the backbone as open_clip stores it (`nn.MultiheadAttention` weights) and the trained tensors in
the authors' checkpoint layout (`TVPt_LoRA_a/b`, `TVPt_Video_Positional_embedding`), and computes attention
unfused (explicit logits + log(size), softmax, values) and merges with `scatter_reduce`, as their code does.
It serves as the oracle that the imported adapter reproduces the authors' model, and as the speed baseline
of `tempme bench model`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tempme.config import MergeSchedule
from tempme.layer_plan import plan_layers


class ReferenceVideoEncoder(nn.Module):
    def __init__(self, visual: nn.Module, schedule: MergeSchedule, frames: int,
                 official: dict[str, torch.Tensor] | None = None):
        """`visual`: an open_clip VisionTransformer with its original attention; `official`: the trained
        entries of an authors' checkpoint (keys after `clip.visual.`), or None for the frozen CLIP."""
        super().__init__()
        self.visual, self.schedule, self.frames = visual, schedule, frames
        self.official = official or {}

    def _attention(self, layer: int, block, x, size):
        mha = block.attn
        s, length, width = x.shape
        heads = mha.num_heads
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        lora_a = self.official.get(f"transformer.resblocks.{layer}.attn.TVPt_LoRA_a")
        if lora_a is not None:
            qkv = qkv + x @ lora_a.t() @ self.official[f"transformer.resblocks.{layer}.attn.TVPt_LoRA_b"].t()
        q, k, v = qkv.chunk(3, dim=-1)
        q, k, v = (t.reshape(s, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        logits = (q * (width // heads) ** -0.5) @ k.transpose(-2, -1)
        logits = logits + size.log().view(s, 1, 1, length)
        out = logits.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(s, length, width)
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias), k.mean(dim=1)

    @staticmethod
    def _merge(metric, r, cls, x, size):
        if r == 0:
            return x, size
        metric = metric / metric.norm(dim=-1, keepdim=True)
        body = torch.arange(metric.shape[1], device=x.device)
        a_idx, b_idx = body[cls::2] if cls % 2 == 0 else body[cls + 1::2], body[cls + (cls % 2 == 0)::2]
        scores = metric[:, a_idx] @ metric[:, b_idx].transpose(-1, -2)
        node_max, node_idx = scores.max(dim=-1)
        edge = node_max.argsort(dim=-1, descending=True)[..., None]
        unm, src = edge[:, r:].sort(dim=1).values, edge[:, :r]
        dst = node_idx[..., None].gather(1, src)

        def apply(t):
            c = t.shape[-1]
            ta, tb = t[:, a_idx], t[:, b_idx]
            kept = ta.gather(1, unm.expand(-1, -1, c))
            moved = ta.gather(1, src.expand(-1, -1, c))
            tb = tb.scatter_reduce(1, dst.expand(-1, -1, c), moved, reduce="sum")
            return torch.cat([t[:, :cls], kept, tb], dim=1)

        merged_size = apply(size)
        return apply(x * size) / merged_size, merged_size

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        v = self.visual
        b, t = video.shape[:2]
        x = v.conv1(video.flatten(0, 1)).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
        x = v.ln_pre(x)
        size = x.new_ones(x.shape[0], x.shape[1], 1)
        plans = plan_layers(self.schedule, len(v.transformer.resblocks), t, x.shape[1])
        for layer, (block, plan) in enumerate(zip(v.transformer.resblocks, plans)):
            if plan.join > 1:
                x, size = self._join(layer, plan, b, x, size)
            out, keys = self._attention(layer, block, block.ln_1(x), size)
            x = x + out
            x, size = self._merge(keys, plan.r_after, plan.cls, x, size)
            x = x + block.mlp(block.ln_2(x))
        cls = x[:, : plans[-1].cls].reshape(b, t, -1)
        frames = v.ln_post(cls) @ v.proj
        frames = frames / frames.norm(dim=-1, keepdim=True)
        weights = x.new_ones(b, t) if mask is None else mask.to(x.dtype)
        pooled = (frames * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
        return pooled / pooled.norm(dim=-1, keepdim=True)

    def _join(self, layer, plan, b, x, size):
        m, c_old = plan.join, plan.cls // plan.join
        slots = x.shape[0] // b
        metric = x.detach()
        pos = self.official.get(f"transformer.resblocks.{layer}.TVPt_Video_Positional_embedding")
        if pos is not None:
            x = (x.view(b, slots, x.shape[1], -1) + pos.reshape(1, slots, 1, -1)).flatten(0, 1)

        def regroup(t):
            t = t.view(b * slots // m, m, t.shape[1], t.shape[2])
            return torch.cat([t[:, :, :c_old].flatten(1, 2), t[:, :, c_old:].flatten(1, 2)], dim=1)

        x, size, metric = regroup(x), regroup(size), regroup(metric)
        return self._merge(metric, plan.r_cross, plan.cls, x, size)
