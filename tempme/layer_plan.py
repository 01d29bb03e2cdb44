"""Per-layer merge plan: how many tokens each layer of the video encoder merges, from a MergeSchedule.

The plan is pure arithmetic on token counts (the formulas of DESIGN.md), computed once per input shape and
then followed by the encoder, so the plan is data and the counts can be checked without running a model.
"""
from __future__ import annotations

from dataclasses import dataclass

from tempme.config import MergeSchedule


@dataclass(frozen=True)
class LayerPlan:
    """What one transformer layer does to a batch of `seqs` sequences of `tokens` tokens per video."""

    join: int           # clips joined into one sequence before attention (1: none)
    r_cross: int        # tokens merged across the joined clips, before attention
    r_after: int        # tokens merged inside each sequence after attention
    seqs: int           # sequences per video entering attention
    tokens: int         # tokens per sequence entering attention (after join and cross merge)
    cls: int            # CLS tokens per sequence entering attention

    @property
    def tokens_out(self) -> int:
        return self.tokens - self.r_after


def plan_layers(schedule: MergeSchedule, num_layers: int, frames: int, tokens_per_frame: int) -> list[LayerPlan]:
    """Merge counts of every layer for `frames` frames of `tokens_per_frame` tokens (CLS included)."""
    for layer in schedule.clipme_layers:
        if not 0 <= layer < num_layers:
            raise ValueError(f"merge schedule: ClipMe layer {layer} outside 0..{num_layers - 1}")
    if frames % schedule.frames_per_video_multiple:
        raise ValueError(f"merge schedule: {frames} frames cannot be joined in groups {schedule.clip_groups}")
    first_clipme = schedule.clipme_layers[0] if schedule.clipme_layers else num_layers
    joins = dict(zip(schedule.clipme_layers, schedule.clip_groups))
    seqs, n, c = frames, tokens_per_frame, 1
    plans = []
    for layer in range(num_layers):
        m, r_cross = joins.get(layer, 1), 0
        if m > 1:
            r_cross = min(int(m * n * schedule.p_cross), (n - c) * m // 2)
            r_after = min(int((m * n - r_cross) * schedule.p_intra), ((n - c) * m - r_cross) // 2)
            seqs, n, c = seqs // m, m * n - r_cross, c * m
        elif layer < first_clipme:
            r_after = min(schedule.imgme_r, (n - c) // 2)
        else:
            r_after = min(int(n * schedule.p_intra), (n - c) // 2)
        plans.append(LayerPlan(join=m, r_cross=r_cross, r_after=r_after, seqs=seqs, tokens=n, cls=c))
        n -= r_after
    return plans


def final_tokens(plans: list[LayerPlan]) -> str:
    """The encoder's output shape per video, as the paper writes it: `1x97`, `12x26`."""
    return f"{plans[-1].seqs}x{plans[-1].tokens_out}"
