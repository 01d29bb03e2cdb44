"""Attention with a fused q,k,v Linear, so peft's LoRA can adapt q, k and v through one `qkv` module.

`nn.MultiheadAttention` keeps its projection as a bare parameter that peft cannot wrap reliably; rewriting it
into `qkv` + `proj` Linears holds the same weights and computes the same function. The forward pass adds
log(size) of each key to the attention logits (proportional attention for merged tokens) and returns the
keys averaged over heads, the metric for merges done after attention.

Two kernels compute the size bias: `sdpa` passes it as an additive mask to `scaled_dot_product_attention` (on CUDA a
kernel that takes one, such as the memory-efficient kernel; the fused kernel on CPU), `flex` (CUDA) adds it in a
FlexAttention score modification, which compiles into one kernel with the attention (`set_attention_kernel` picks one;
`tempme bench model --attention` measures both). Layers without a bias (no merge yet) always use SDPA, whose flash
kernel is the fastest where there is nothing to add.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from tempme.errors import UserError

KERNELS = ("sdpa", "flex")


class FusedAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.kernel = "sdpa"
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> FusedAttention:
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or not mha.batch_first:
            raise ValueError("only batch-first self-attention with a packed, biased in-projection is supported")
        fused = cls(mha.embed_dim, mha.num_heads).to(mha.in_proj_weight.dtype)
        with torch.no_grad():
            fused.qkv.weight.copy_(mha.in_proj_weight)
            fused.qkv.bias.copy_(mha.in_proj_bias)
            fused.proj.weight.copy_(mha.out_proj.weight)
            fused.proj.bias.copy_(mha.out_proj.bias)
        return fused

    def forward(self, x: torch.Tensor, size: torch.Tensor | None = None, causal: bool = False,
                want_keys: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [S, L, C]; size [S, L, 1] token sizes (None: all ones). Returns (output, keys averaged over heads)."""
        s, length, width = x.shape
        q, k, v = self.qkv(x).view(s, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if size is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        elif self.kernel == "flex":
            out = _flex_attention(q, k, v, score_mod=_size_bias(size.view(s, length).log().float()))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=size.log().to(q.dtype).view(s, 1, 1, length))
        out = self.proj(out.transpose(1, 2).reshape(s, length, width))
        return out, (k.mean(dim=1) if want_keys else None)


def fuse_attention(transformer: nn.Module) -> None:
    """Replace the `attn` of every residual block of an open_clip transformer by a FusedAttention."""
    for block in transformer.resblocks:
        if isinstance(block.attn, nn.MultiheadAttention):
            block.attn = FusedAttention.from_multihead(block.attn)


def set_attention_kernel(module: nn.Module, kernel: str) -> None:
    """Use `kernel` ("sdpa" or "flex") for the size-biased attention of every FusedAttention in `module`."""
    if kernel not in KERNELS:
        raise UserError(f"unknown attention kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    for m in module.modules():
        if isinstance(m, FusedAttention):
            m.kernel = kernel


def _size_bias(log_size: torch.Tensor):
    def add_log_size(score, batch, head, query, key):
        return score + log_size[batch, key]
    return add_log_size


def _flex_attention(q, k, v, score_mod):
    """FlexAttention, compiled: inside a compiled encoder it joins its graph; in eager it is compiled once
    here (eager FlexAttention is a slow reference implementation)."""
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type != "cuda":
        raise UserError("the flex attention kernel runs on CUDA only; use the sdpa kernel on "
                         f"{q.device.type}")
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, score_mod=score_mod)
    return _compiled_flex_attention()(q, k, v, score_mod=score_mod)


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)
