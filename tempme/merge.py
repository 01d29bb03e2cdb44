"""Bipartite soft matching (ToMe) with CLS tokens kept out of it, and size-weighted merging.

Sequences are `[c CLS tokens, patch tokens]`. The whole sequence alternates into set A (even positions)
and set B (odd positions); CLS tokens belong to neither. Each A token finds its most similar B token; the
`r` A tokens with the highest similarity merge into their partner. The result is laid out as
`[CLS tokens, unmerged A tokens in their original order, B tokens]`. Everything is batched: no Python
loop runs over tokens or sequences, the sets are strided views (no index tensors, no host synchronisation),
and the token counts are plain integers, so the encoder compiles into one graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Matching:
    """Which tokens go where; apply it to any per-token tensor with `merge_weighted` or `merge_sum`."""

    cls: int
    a_pos: slice              # positions of set A in the sequence
    b_pos: slice              # positions of set B in the sequence
    unm_idx: torch.Tensor     # [S, Na - r, 1] indices into A of the tokens that stay, in original order
    src_idx: torch.Tensor     # [S, r, 1] indices into A of the tokens merged away
    dst_idx: torch.Tensor     # [S, r, 1] indices into B of their partners

    def merge_sum(self, x: torch.Tensor) -> torch.Tensor:
        """[S, L, C] -> [S, L - r, C]: merged tokens are summed into their partner."""
        channels = x.shape[-1]
        a, b = x[:, self.a_pos], x[:, self.b_pos]
        unm = a.gather(1, self.unm_idx.expand(-1, -1, channels))
        src = a.gather(1, self.src_idx.expand(-1, -1, channels))
        b = b.scatter_add(1, self.dst_idx.expand(-1, -1, channels), src)
        return torch.cat([x[:, : self.cls], unm, b], dim=1)

    def merge_weighted(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Size-weighted mean of `x` [S, L, C] with sizes [S, L, 1]; returns the merged x and sizes."""
        merged_size = self.merge_sum(size)
        return self.merge_sum(x * size) / merged_size, merged_size


def alternation(length: int, cls: int) -> tuple[slice, slice]:
    """Positions of sets A (even) and B (odd) in a sequence of `length` tokens whose first `cls` are CLS."""
    first_even = cls + cls % 2
    first_odd = cls + 1 - cls % 2
    return slice(first_even, length, 2), slice(first_odd, length, 2)


def bipartite_soft_matching(metric: torch.Tensor, r: int, cls: int) -> Matching:
    """Match `r` A tokens of each sequence of `metric` [S, L, C] to their most similar B token (cosine)."""
    length = metric.shape[1]
    a_pos, b_pos = alternation(length, cls)
    set_a = len(range(length)[a_pos])
    if not 0 <= r <= set_a:
        raise ValueError(f"cannot merge {r} tokens: set A holds {set_a} of {length} tokens")
    metric = F.normalize(metric, dim=-1)
    scores = metric[:, a_pos] @ metric[:, b_pos].transpose(1, 2)        # [S, Na, Nb]
    best, partner = scores.max(dim=-1)                                  # [S, Na]
    order = best.argsort(dim=-1, descending=True)
    src_idx = order[:, :r]
    unm_idx = order[:, r:].sort(dim=-1).values
    dst_idx = partner.gather(1, src_idx)
    return Matching(cls, a_pos, b_pos, unm_idx[..., None], src_idx[..., None], dst_idx[..., None])
