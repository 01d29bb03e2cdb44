"""Retrieval evaluation: embed every video and caption of a split once, rank, and report metrics.

Each video is encoded once however many captions it has. Embedding is split across workers by the caller
(each embeds its part of the split: `split_batches`); `SplitEmbeddings.concat` joins the parts, and `score`
ranks every caption against every video of the split.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.evaluate.metrics import EvalResult, RetrievalRanks, embedding_ranks, rank_metrics, recall_curve
from pipelines.evaluate.options import DEFAULT_V2T_PROTOCOL, EvaluateOptions
from pipelines.model.registry import ModelRef, open_model
from pipelines.shards.frames import normalise
from pipelines.shards.reader import SampleTable
from pipelines.shards.stream import ShardStream, stream_batches
from tempme.errors import UserError
from tempme.visualize import visualize_merges


@dataclass
class SplitEmbeddings:
    """Embeddings of a split (or a worker's part of it); text i describes video `text_video_ids[i]`."""

    video_ids: list[str]
    videos: np.ndarray             # [videos, D] float32, L2-normalised
    text_video_ids: list[str]
    texts: np.ndarray              # [texts, D] float32, L2-normalised

    @classmethod
    def concat(cls, parts: list[SplitEmbeddings]) -> SplitEmbeddings:
        """One split from the workers' parts."""
        return cls(video_ids=[v for p in parts for v in p.video_ids],
                   videos=np.concatenate([p.videos for p in parts]),
                   text_video_ids=[v for p in parts for v in p.text_video_ids],
                   texts=np.concatenate([p.texts for p in parts]))


def split_batches(table: SampleTable, batch_size: int, rank: int = 0, world_size: int = 1, *, loader_workers: int,
                  pin_memory: bool = False, skip_corrupt: bool = False) -> Iterator[dict]:
    """The videos of a split (this rank's part), each once, in batches: video [B,T,3,H,W] uint8, mask [B,T],
    captions [[str]], id [str]; with `skip_corrupt`, a sample that cannot be read is left out and named in its
    batch's `corrupt` (else it raises)."""
    stream = ShardStream(table, batch_size=batch_size, mode="videos", rank=rank, world_size=world_size,
                         lanes=max(loader_workers, 1), skip_corrupt=skip_corrupt)
    return stream_batches(stream, pin_memory, workers=loader_workers)


@torch.no_grad()
def embed_videos(model, batches: Iterable[dict], amp_dtype: torch.dtype | None = None,
                 skipped: list[str] | None = None) -> SplitEmbeddings:
    """Embed `split_batches`' batches: frames copied as uint8 and normalised on the model's device. The samples
    a batch left out as corrupt are added to `skipped`."""
    was_training = model.training
    model.eval()
    device = model.device
    video_ids, video_emb, text_ids, text_emb = [], [], [], []
    try:
        for batch in batches:
            if skipped is not None:
                skipped += batch.pop("corrupt", ())
            if "id" not in batch:     # every sample of it was corrupt
                continue
            mask = batch["mask"]    # stays on the CPU, where the merge plan reads it
            frames = normalise(batch["video"].to(device, non_blocking=True), mask)
            captions = [c for group in batch["captions"] for c in group]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                v = model.encode_video(frames, mask)
                t = model.encode_text(captions) if captions else v[:0]
            video_ids += batch["id"]
            text_ids += [vid for vid, group in zip(batch["id"], batch["captions"]) for _ in group]
            video_emb.append(v.float().cpu().numpy())
            text_emb.append(t.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not video_emb:  # a worker with no videos of the split still returns arrays of the right width
        video_emb = text_emb = [np.zeros((0, model.encode_text([""]).shape[1]), np.float32)]
    return SplitEmbeddings(video_ids, np.concatenate(video_emb), text_ids, np.concatenate(text_emb))


def score(embeddings: SplitEmbeddings, split: str = "evaluation", device="cpu",
          v2t_protocol: str = DEFAULT_V2T_PROTOCOL) -> EvalResult:
    """Rank every caption against every video of the split, in blocks on `device`: both directions'
    retrieval metrics, video-to-text by `v2t_protocol` (default the authors'). NaN or infinite embeddings are an error
    naming the split and the videos, never a silent hit."""
    if not embeddings.text_video_ids:
        raise UserError(f"the {split} split has no captions to rank")
    broken = sorted({vid for vid, row in zip(embeddings.video_ids, embeddings.videos) if not np.isfinite(row).all()}
                    | {vid for vid, row in zip(embeddings.text_video_ids, embeddings.texts)
                       if not np.isfinite(row).all()})
    if broken:
        raise UserError(f"the {split} split: NaN or infinite embeddings for {len(broken)} videos or their "
                         f"captions ({', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''}); the model "
                         f"or its inputs are broken")
    column = {vid: i for i, vid in enumerate(embeddings.video_ids)}
    if len(column) != len(embeddings.video_ids):
        raise UserError("the evaluation split holds some video ids more than once")
    ranks = embedding_ranks(embeddings.texts, embeddings.videos,
                            [column[vid] for vid in embeddings.text_video_ids], device, protocol=v2t_protocol)
    metrics = {**rank_metrics(ranks.t2v, "t2v"), **rank_metrics(ranks.v2t, "v2t")}
    return EvalResult(metrics=metrics, ranks=ranks, videos=len(embeddings.video_ids),
                      texts=len(embeddings.text_video_ids), v2t_protocol=v2t_protocol)


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


def save_merge_pictures(model, batches: Iterable[dict], count: int, out_dir: str | Path) -> list[Path]:
    """PNG pictures of which patches each final token merged, for the first `count` videos of `batches`."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = ((video, mask, vid) for batch in batches for video, mask, vid in zip(batch["video"], batch["mask"],
                                                                                  batch["id"]))
    paths = []
    for video, mask, video_id in itertools.islice(videos, count):
        picture = visualize_merges(model, video.permute(0, 2, 3, 1).numpy(), valid=int(mask.sum()))
        paths.append(out_dir / f"{video_id}.png")
        picture.save(paths[-1])
    return paths


def evaluate_model(options: EvaluateOptions, torch_device: str = "cpu") -> tuple[EvalResult, ModelRef]:
    """Open a model from any adapter URI (`registry.open_model`) and evaluate it on a split, in this process on
    `torch_device`, in its inference form (`precision` auto: bf16 where the hardware computes it natively)."""
    o = options
    table = SampleTable.build(o.shards, o.split)
    model, resolved = open_model(o.model, tracking_uri=o.tracking_uri)
    model.to(torch_device).for_inference(o.precision)
    batches = split_batches(table, o.batch_size, loader_workers=o.loader_workers,
                            pin_memory=model.device.type == "cuda")
    embeddings = embed_videos(model, batches)
    return score(embeddings, o.split, model.device, o.v2t_protocol), resolved
