"""Complexity of a model's video encoder, measured by running it: token schedule, GMACs, trainable size.

Multiply-accumulates are counted by torch's FlopCounterMode over every matmul, the patch convolution and
attention (which CPU runs as a fused kernel the counter does not know, so its formula is registered here).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tempme.config import ModelConfig
from tempme.model import TempMeModel

_aten = torch.ops.aten


def _fused_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    batch, heads, queries, dim = query_shape
    keys, value_dim = key_shape[2], value_shape[3]
    return 2 * batch * heads * queries * keys * (dim + value_dim)


_CUSTOM_FORMULAS = {_aten._scaled_dot_product_flash_attention_for_cpu: _fused_attention_flops}


def complexity_report(config: ModelConfig) -> dict:
    """`preset`, `gmacs` (one video), `final_tokens` ("1x97"), `tokens_per_layer`, `trainable_params`."""
    model = TempMeModel(config).eval()
    video = torch.randn(1, config.frames, 3, model.image_size, model.image_size)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CUSTOM_FORMULAS) as counter:
        encoding = model.encode_video_full(video)
    plans = model.video.plans
    tokens_per_layer = [f"{seqs}x{tokens}" for seqs, tokens in encoding.layer_shapes]
    return {
        "preset": config.name,
        "gmacs": round(counter.get_total_flops() / 2e9, 3),
        "final_tokens": f"{plans[-1].seqs}x{plans[-1].tokens_out}",
        "tokens_per_layer": tokens_per_layer,
        "merged_per_layer": [{"cross": p.r_cross, "after_attention": p.r_after} for p in plans],
        "trainable_params": sum(p.numel() for p in model.trainable_parameters().values()),
    }


def format_report(report: dict) -> str:
    lines = [f"preset {report['preset']}", "layer  tokens (sequences x tokens entering attention)  merged"]
    for layer, (shape, merged) in enumerate(zip(report["tokens_per_layer"], report["merged_per_layer"])):
        note = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in merged.items() if v)
        lines.append(f"{layer:>5}  {shape:<46}  {note}")
    lines += [f"final tokens      {report['final_tokens']}",
              f"video GMACs       {report['gmacs']:.2f}",
              f"trainable params  {report['trainable_params']:,}"]
    return "\n".join(lines)
