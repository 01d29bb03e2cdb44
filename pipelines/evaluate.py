"""Retrieval evaluation: embed every video and caption of a split once, rank, and report metrics.

Each video is encoded once however many captions it has. Embedding is split across workers by the caller
(each embeds its part of the shards); `SplitEmbeddings.concat` joins the parts, and `score` ranks every
caption against every video of the split.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .metrics import RetrievalRanks, embedding_ranks, rank_metrics, recall_curve
from .model_store import ResolvedModel, load_registered_model
from .shards import ShardDataset


@dataclass
class SplitEmbeddings:
    """Embeddings of a split (or a worker's part of it); text i describes video `text_video_ids[i]`."""

    video_ids: list[str]
    videos: np.ndarray             # [videos, D] float32, L2-normalised
    text_video_ids: list[str]
    texts: np.ndarray              # [texts, D] float32, L2-normalised

    @classmethod
    def concat(cls, parts: list["SplitEmbeddings"]) -> "SplitEmbeddings":
        """One split from the workers' parts."""
        return cls(video_ids=[v for p in parts for v in p.video_ids],
                   videos=np.concatenate([p.videos for p in parts]),
                   text_video_ids=[v for p in parts for v in p.text_video_ids],
                   texts=np.concatenate([p.texts for p in parts]))


@dataclass
class EvalResult:
    metrics: dict[str, float]
    ranks: RetrievalRanks
    videos: int
    texts: int


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def split_videos(shards: str, split: str, rank: int = 0, world_size: int = 1,
                 loader_workers: int = 0) -> Iterator[tuple]:
    """The videos of `split` (this rank's part), each once: (video [T,3,H,W], mask [T], captions, video_id)."""
    from torch.utils.data import DataLoader

    dataset = ShardDataset(shards, split, mode="videos", rank=rank, world_size=world_size)
    for item in DataLoader(dataset, batch_size=None, num_workers=loader_workers):
        yield item["video"], item["mask"], item["captions"], item["id"]


@torch.no_grad()
def embed_videos(model, videos: Iterable, batch_size: int, amp_dtype: torch.dtype | None = None) -> SplitEmbeddings:
    """Embed `videos`, an iterable of (video [T,3,H,W], mask [T], captions list[str], video_id)."""
    was_training = model.training
    model.eval()
    device = model.device
    video_ids, video_emb, text_ids, text_emb = [], [], [], []
    try:
        for batch in _batches(videos, batch_size):
            frames = torch.stack([item[0] for item in batch]).to(device, non_blocking=True)
            mask = torch.stack([torch.as_tensor(item[1], dtype=torch.bool) for item in batch])   # checked on the CPU
            captions = [c for item in batch for c in item[2]]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                v = model.encode_video(frames, mask)
                t = model.encode_text(captions) if captions else v[:0]
            video_ids += [item[3] for item in batch]
            text_ids += [item[3] for item in batch for _ in item[2]]
            video_emb.append(v.float().cpu().numpy())
            text_emb.append(t.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not video_emb:  # a worker with no videos of the split still returns arrays of the right width
        video_emb = text_emb = [np.zeros((0, model.encode_text([""]).shape[1]), np.float32)]
    return SplitEmbeddings(video_ids, np.concatenate(video_emb), text_ids, np.concatenate(text_emb))


def score(embeddings: SplitEmbeddings, split: str = "evaluation", device="cpu") -> EvalResult:
    """Rank every caption against every video of the split, in blocks on `device`: both directions'
    retrieval metrics. NaN or infinite embeddings are an error naming the split and the videos, never a
    silent hit."""
    if not embeddings.text_video_ids:
        raise ValueError(f"the {split} split has no captions to rank")
    broken = sorted({vid for vid, row in zip(embeddings.video_ids, embeddings.videos) if not np.isfinite(row).all()}
                    | {vid for vid, row in zip(embeddings.text_video_ids, embeddings.texts)
                       if not np.isfinite(row).all()})
    if broken:
        raise ValueError(f"the {split} split: NaN or infinite embeddings for {len(broken)} videos or their "
                         f"captions ({', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''}); the model "
                         f"or its inputs are broken")
    column = {vid: i for i, vid in enumerate(embeddings.video_ids)}
    if len(column) != len(embeddings.video_ids):
        raise ValueError("the evaluation split holds some video ids more than once")
    ranks = embedding_ranks(embeddings.texts, embeddings.videos,
                            [column[vid] for vid in embeddings.text_video_ids], device)
    metrics = {**rank_metrics(ranks.t2v, "t2v"), **rank_metrics(ranks.v2t, "v2t")}
    return EvalResult(metrics=metrics, ranks=ranks, videos=len(embeddings.video_ids),
                      texts=len(embeddings.text_video_ids))


def save_recall_plot(ranks: RetrievalRanks, path: str | Path, title: str) -> Path:
    """Recall-at-K curves of both directions (K up to 50, log axis) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, 51)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, r in (("text-to-video", ranks.t2v), ("video-to-text", ranks.v2t)):
        ax.plot(ks, recall_curve(r, len(ks)), label=name)
    ax.set_xscale("log")
    ax.set_xticks([1, 5, 10, 50], labels=["1", "5", "10", "50"])
    ax.set_xlabel("K")
    ax.set_ylabel("recall at K (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_merge_pictures(model, videos: Iterable, count: int, out_dir: str | Path) -> list[Path]:
    """PNG pictures of which patches each final token merged, for the first `count` of `videos`."""
    from tempme import CLIP_MEAN, CLIP_STD
    from tempme.visualize import visualize_merges

    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for video, mask, _, video_id in itertools.islice(videos, count):
        # Back from CLIP normalisation to the uint8 frames the picture is painted over.
        frames = ((video * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        picture = visualize_merges(model, frames, valid=int(torch.as_tensor(mask).sum()))
        paths.append(out_dir / f"{video_id}.png")
        picture.save(paths[-1])
    return paths


def evaluate_model(model_uri: str, shards: str, split: str, batch_size: int = 16, device: str = "cpu",
                   loader_workers: int = 0, precision: str = "auto") -> tuple[EvalResult, ResolvedModel]:
    """Load a model from any adapter URI (see `model_store`) and evaluate it on a split, in this process,
    in its inference form (`precision` auto: bf16 where the hardware computes it natively)."""
    model, resolved = load_registered_model(model_uri)
    model.to(device).for_inference(precision)
    embeddings = embed_videos(model, split_videos(shards, split, loader_workers=loader_workers), batch_size)
    return score(embeddings, split, model.device), resolved
