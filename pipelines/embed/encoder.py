"""The Ray Data actor that turns indexed shard samples into video embeddings, one model per actor.

Each actor reads its samples by byte range (no whole-shard scans), decodes the JPEG frames, and runs the
video encoder on the batch. A sample that cannot be read or decoded, or does not fit the model, becomes
an error string in its row instead of an exception, so one bad video never stops the job.
"""
from __future__ import annotations

import json

import numpy as np

from pipelines.embed.model import load_from_files
from pipelines.shards import IndexedSample, SampleReader, frames_to_tensor

# Columns of the rows fed to the actors (one per video to embed); `members` is the sample's member table
# as JSON, so rows stay plain Arrow types.
SAMPLE_COLUMNS = ("video_id", "shard", "key", "span_start", "span_end", "members", "valid", "captions")


def sample_row(s: IndexedSample) -> dict:
    return {"video_id": s.id, "shard": s.shard, "key": s.key, "span_start": s.span[0], "span_end": s.span[1],
            "members": json.dumps(s.members), "valid": s.valid, "captions": s.captions}


def _indexed_sample(batch: dict, i: int) -> IndexedSample:
    return IndexedSample(shard=str(batch["shard"][i]), key=str(batch["key"][i]), id=str(batch["video_id"][i]),
                         captions=int(batch["captions"][i]), valid=int(batch["valid"][i]),
                         span=(int(batch["span_start"][i]), int(batch["span_end"][i])),
                         members={k: tuple(v) for k, v in json.loads(str(batch["members"][i])).items()})


class VideoEmbedder:
    """Callable class for `Dataset.map_batches`: batch of sample rows -> video_id, source, embedding, error."""

    def __init__(self, adapter: dict[str, bytes], threads: int = 1, use_gpu: bool = False, precision: str = "auto",
                 compile_batch: int | None = None):
        """`compile_batch`: compile the video encoder for batches of exactly this many videos; shorter
        batches are padded to it, so that one graph serves every call."""
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = load_from_files(adapter).to(self.device).for_inference(precision, compile=bool(compile_batch))
        self.compile_batch = compile_batch
        self.frames, self.size = self.model.config.frames, self.model.image_size
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(["x"]).shape[-1])
        self.reader = SampleReader()

    def _load(self, batch: dict, i: int):
        sample = _indexed_sample(batch, i)
        meta, jpegs = self.reader.read(sample)
        if meta.get("frames") != self.frames:
            raise ValueError(f"sample has {meta.get('frames')} frame slots, the model takes {self.frames}")
        video, mask = frames_to_tensor(jpegs, self.frames)
        if tuple(video.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"frames are {tuple(video.shape[-2:])}, the model takes {self.size}x{self.size}")
        return video, mask

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        n = len(batch["video_id"])
        errors = [""] * n
        videos, masks, ok = [], [], []
        for i in range(n):
            try:
                video, mask = self._load(batch, i)
            except Exception as e:  # any unreadable sample is recorded, not raised
                errors[i] = f"{type(e).__name__}: {e}"
                continue
            videos.append(video)
            masks.append(mask)
            ok.append(i)
        embedding = np.zeros((n, self.dim), np.float32)
        if ok:
            pad = max(0, (self.compile_batch or 0) - len(ok))
            video, mask = torch.stack(videos + videos[:1] * pad), torch.stack(masks + masks[:1] * pad)
            with torch.inference_mode():
                out = self.model.encode_video(video.to(self.device), mask)
            embedding[ok] = out[: len(ok)].float().cpu().numpy()
        return {"video_id": np.asarray(batch["video_id"], dtype=object),
                "source": np.asarray(batch["shard"], dtype=object),
                "embedding": embedding, "error": np.asarray(errors, dtype=object)}
