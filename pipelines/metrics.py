"""Text-video retrieval metrics from a similarity matrix.

Texts are rows, videos are columns, and `text_video[i]` is the column of text i's video, so datasets with
several captions per video need nothing special: a text's target is its video, and for video-to-text a video
is ranked by its best-ranked caption (the other captions of the same video never count against it).

Ties count against the target: a rank is 1 + the number of wrong candidates scoring at least as high as the
target. A model whose embeddings collapsed to one point (every score tied) therefore scores R@1 = 0 instead
of a perfect 100, which an optimistic tie rule would give it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RECALL_KS = (1, 5, 10, 50)


@dataclass(frozen=True)
class RetrievalRanks:
    """1-based rank of the right answer for each query: t2v per text, v2t per video that has a caption."""

    t2v: np.ndarray
    v2t: np.ndarray


def retrieval_ranks(similarity, text_video) -> RetrievalRanks:
    """Ranks of the right video for each text and of the best caption for each captioned video."""
    sim = np.asarray(similarity, dtype=np.float64)
    owner = np.asarray(text_video, dtype=np.int64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a [texts, videos] matrix, got shape {sim.shape}")
    n_text, n_video = sim.shape
    if owner.shape != (n_text,):
        raise ValueError(f"text_video must give one video index per text ({n_text}), got shape {owner.shape}")
    if n_text == 0:
        raise ValueError("no texts to rank")
    if owner.min() < 0 or owner.max() >= n_video:
        raise ValueError(f"text_video holds video indices outside [0, {n_video})")
    bad = ~np.isfinite(sim)
    if bad.any():   # NaN compares false with everything: it would silently rank its target first
        texts, videos = np.nonzero(bad)
        raise ValueError(f"{int(bad.sum())} similarities are NaN or infinite (texts {sorted(set(texts.tolist()))[:5]}, "
                         f"videos {sorted(set(videos.tolist()))[:5]})")

    target = sim[np.arange(n_text), owner]
    # Every video scoring >= the target counts; the target itself is one of them, which makes the rank 1-based.
    t2v = (sim >= target[:, None]).sum(axis=1)

    best = np.full(n_video, -np.inf)
    np.maximum.at(best, owner, target)
    captioned = np.isfinite(best)
    other_video = owner[:, None] != np.arange(n_video)[None, :]
    v2t = 1 + ((sim >= best[None, :]) & other_video).sum(axis=0)
    return RetrievalRanks(t2v=t2v, v2t=v2t[captioned])


def rank_metrics(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """R@K in percent, median and mean rank, and R-sum (R@1 + R@5 + R@10), keys like `t2v_r1`."""
    ranks = np.asarray(ranks)
    out = {f"{prefix}_r{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_KS}
    out[f"{prefix}_medr"] = float(np.median(ranks))
    out[f"{prefix}_meanr"] = float(np.mean(ranks))
    out[f"{prefix}_rsum"] = out[f"{prefix}_r1"] + out[f"{prefix}_r5"] + out[f"{prefix}_r10"]
    return out


def retrieval_metrics(similarity, text_video) -> dict[str, float]:
    """Both directions' metrics: `t2v_r1`, ..., `v2t_rsum`."""
    ranks = retrieval_ranks(similarity, text_video)
    return {**rank_metrics(ranks.t2v, "t2v"), **rank_metrics(ranks.v2t, "v2t")}


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """Recall (percent) at K = 1..max_k, for the recall-at-K plot."""
    ranks = np.asarray(ranks)
    ks = np.arange(1, max_k + 1)
    return 100.0 * (ranks[None, :] <= ks[:, None]).mean(axis=1)
