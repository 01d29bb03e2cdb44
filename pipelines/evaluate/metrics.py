"""Text-video retrieval metrics from a similarity matrix.

Texts are rows, videos are columns, and `text_video[i]` is the column of text i's video, so datasets with
several captions per video need nothing special: a text's target is its video. For video-to-text a video is
ranked by its best caption (the other captions of the same video never count against it), against
- `per_video` (the authors' protocol, the default): every other video's best caption for it, so each
  candidate video counts once however many captions it has;
- `per_caption`: every caption of every other video.
With one caption per video the two are the same.

Similarities are float32 and ranked a block of texts at a time, on the device that holds the embeddings, so a split of
any size needs block x videos of memory. Ties count against the target: a rank is 1 + the number of wrong candidates
scoring at least as high as the target. A model whose embeddings collapsed to one point (every score tied) therefore
scores R@1 = 0 instead of a perfect 100, which an optimistic tie rule would give it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.evaluate.options import V2T_PROTOCOLS

RECALL_KS = (1, 5, 10, 50)


@dataclass(frozen=True)
class RetrievalRanks:
    """1-based rank of the right answer for each query: t2v per text, v2t per video that has a caption."""

    t2v: np.ndarray
    v2t: np.ndarray


@dataclass
class EvalResult:
    """A model's retrieval on a split: its metrics and every text's and video's rank."""

    metrics: dict[str, float]
    ranks: RetrievalRanks
    videos: int
    texts: int
    v2t_protocol: str       # how video-to-text counted other videos' captions (`V2T_PROTOCOLS`)


def retrieval_ranks(similarity, text_video, protocol: str = "per_video") -> RetrievalRanks:
    """Ranks of the right video for each text and of the best caption for each captioned video, from a
    [texts, videos] similarity matrix."""
    sim = torch.as_tensor(np.asarray(similarity, dtype=np.float32))
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a [texts, videos] matrix, got shape {tuple(sim.shape)}")
    return _blocked_ranks(lambda rows: sim[rows], sim.shape[0], sim.shape[1], text_video, "cpu", protocol)


def embedding_ranks(texts, videos, text_video, device="cpu", block: int = 4096,
                    protocol: str = "per_video") -> RetrievalRanks:
    """`retrieval_ranks` of the cosine similarities of L2-normalised text and video embeddings, computed in
    float32 on `device` a block of `block` texts at a time: memory is block x videos, never texts x videos."""
    texts = torch.as_tensor(np.asarray(texts, dtype=np.float32)).to(device)
    videos = torch.as_tensor(np.asarray(videos, dtype=np.float32)).to(device)
    return _blocked_ranks(lambda rows: texts[rows] @ videos.T, texts.shape[0], videos.shape[0],
                          text_video, device, protocol, block)


def _blocked_ranks(scores, n_text: int, n_video: int, text_video, device, protocol: str = "per_video",
                   block: int = 4096) -> RetrievalRanks:
    """Two passes over blocks of texts, `scores(rows)` giving the [len(rows), videos] similarities of those
    texts: first every text's target score, then how many candidates score at least as high (ties count
    against). For `per_video`, the second pass takes whole videos' captions at a time (texts sorted by video)."""
    if protocol not in V2T_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(V2T_PROTOCOLS)}, got {protocol!r}")
    owner_np = np.asarray(text_video, dtype=np.int64)
    if owner_np.shape != (n_text,):
        raise ValueError(f"text_video must give one video index per text ({n_text}), got shape {owner_np.shape}")
    if n_text == 0:
        raise ValueError("no texts to rank")
    if owner_np.min() < 0 or owner_np.max() >= n_video:
        raise ValueError(f"text_video holds video indices outside [0, {n_video})")
    owner = torch.as_tensor(owner_np, device=device)
    videos = torch.arange(n_video, device=device)
    target = torch.empty(n_text, device=device)
    bad_texts, bad_videos, bad = set(), set(), 0
    by_video = torch.as_tensor(np.argsort(owner_np, kind="stable"), device=device)
    blocks = list(_text_blocks(owner_np, by_video, block, whole_videos=protocol == "per_video"))
    for rows in blocks:   # both passes take the same blocks, so a text's scores are the same bits in each
        sim = scores(rows)
        broken = ~torch.isfinite(sim)
        if broken.any():   # NaN compares false with everything: it would silently rank its target first
            at, cols = broken.nonzero(as_tuple=True)
            bad += int(broken.sum())
            bad_texts.update(rows[at].tolist())
            bad_videos.update(cols.tolist())
            continue
        target[rows] = sim.gather(1, owner[rows, None]).squeeze(1)
    if bad:
        raise ValueError(f"{bad} similarities are NaN or infinite (texts {sorted(bad_texts)[:5]}, "
                         f"videos {sorted(bad_videos)[:5]})")
    best = torch.full((n_video,), -torch.inf, device=device).scatter_reduce(0, owner, target, "amax")
    t2v = torch.empty(n_text, dtype=torch.int64, device=device)
    above_best = torch.zeros(n_video, dtype=torch.int64, device=device)
    for rows in blocks:
        sim = scores(rows)
        # Every video scoring >= the target counts; the target itself is one of them: ranks are 1-based.
        t2v[rows] = (sim >= target[rows, None]).sum(1)
        candidates, of = owner[rows], slice(None)
        if protocol == "per_video":   # each candidate video's best caption stands for all of its captions
            candidates, of = torch.unique(owner[rows], return_inverse=True)
            sim = torch.full((len(candidates), n_video), -torch.inf, device=device).scatter_reduce(
                0, of[:, None].expand(-1, n_video), sim, "amax")
        other_video = candidates[:, None] != videos[None, :]
        above_best += ((sim >= best[None, :]) & other_video).sum(0)
    captioned = torch.isfinite(best)
    return RetrievalRanks(t2v=t2v.cpu().numpy(), v2t=(1 + above_best)[captioned].cpu().numpy())


def _text_blocks(owner: np.ndarray, by_video: torch.Tensor, block: int, whole_videos: bool):
    """Blocks of about `block` text indices; with `whole_videos`, texts sorted by video and each video's
    captions in one block."""
    n = len(owner)
    if not whole_videos:
        for start in range(0, n, block):
            yield by_video.new_tensor(np.arange(start, min(start + block, n)))
        return
    sorted_owner = owner[by_video.cpu().numpy()]
    start = 0
    while start < n:
        stop = min(start + block, n)
        if stop < n:   # move the cut to the start of the video it falls in (or past it, if that is all)
            cut = int(np.searchsorted(sorted_owner, sorted_owner[stop], side="left"))
            stop = cut if cut > start else int(np.searchsorted(sorted_owner, sorted_owner[stop], side="right"))
        yield by_video[start:stop]
        start = stop


def rank_metrics(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """R@K in percent, median and mean rank, and R-sum (R@1 + R@5 + R@10), keys like `t2v_r1`."""
    ranks = np.asarray(ranks)
    out = {f"{prefix}_r{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_KS}
    out[f"{prefix}_medr"] = float(np.median(ranks))
    out[f"{prefix}_meanr"] = float(np.mean(ranks))
    out[f"{prefix}_rsum"] = out[f"{prefix}_r1"] + out[f"{prefix}_r5"] + out[f"{prefix}_r10"]
    return out


def retrieval_metrics(similarity, text_video, protocol: str = "per_video") -> dict[str, float]:
    """Both directions' metrics: `t2v_r1`, ..., `v2t_rsum`."""
    ranks = retrieval_ranks(similarity, text_video, protocol)
    return {**rank_metrics(ranks.t2v, "t2v"), **rank_metrics(ranks.v2t, "v2t")}


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """Recall (percent) at K = 1..max_k, for the recall-at-K plot."""
    ranks = np.asarray(ranks)
    ks = np.arange(1, max_k + 1)
    return 100.0 * (ranks[None, :] <= ks[:, None]).mean(axis=1)
