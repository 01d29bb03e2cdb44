"""The two stages that turn indexed shard samples into embeddings: frames on CPUs, the model on accelerators.

`read_frames` (Ray tasks on CPUs) reads the batch's samples by byte ranges, one request per run of neighbouring
samples of a tar, and decodes their JPEGs to uint8 frames;
`VideoEmbedder` (an actor pool, one model per actor, a GPU each when asked for) normalises them on its device
and encodes them. A GPU thus only ever waits for a uint8 copy, and decoding scales with the CPUs of the
cluster, not with the number of GPUs. A sample that cannot be read or decoded, or does not fit the model,
becomes an error string in its row instead of an exception, so one bad video never stops the job.
Both import torch where they run, not here: the job's driver, which hands them to Ray Data, never loads it.
"""
from __future__ import annotations

import posixpath

import numpy as np

from pipelines.model.adapter_bytes import load_from_files
from pipelines.shards.reader import SampleReader
from tempme.config import DEFAULT_PRECISION

PASSED_ON = ("video_id", "caption", "thumb_shard", "thumb_offset", "thumb_size", "source", "window_start",
             "window_end", "error")


def read_frames(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data batch function: plan rows (`embed.plan.PLAN_SCHEMA`) -> uint8 frames [T,3,H,W], mask [T], first
    caption, error."""
    from pipelines.shards.frames import decode_frames

    reader = SampleReader()
    frames, masks, captions, errors = [], [], [], []
    try:
        samples = reader.read_many([str(t) for t in batch["tar"]], [int(s) for s in batch["start"]],
                                   [int(e) for e in batch["end"]])     # one request per run of neighbours
    finally:
        reader.close()
    for sample in samples:
        try:
            if isinstance(sample, Exception):
                raise sample
            meta, jpegs = sample
            video, mask = decode_frames(jpegs, int(meta["frames"]))
            frames.append(video.numpy()), masks.append(mask.numpy())
            captions.append(shown_caption(meta)), errors.append("")
        except Exception as e:  # any unreadable sample is recorded, not raised
            frames.append(np.zeros((0, 3, 0, 0), np.uint8)), masks.append(np.zeros(0, bool))
            captions.append(""), errors.append(f"{type(e).__name__}: {e}")
    same = len({f.shape for f in frames}) == 1
    return {"video_id": batch["video_id"], "thumb_shard": batch["tar"], "thumb_offset": batch["thumb_offset"],
            "thumb_size": batch["thumb_size"], "source": batch["source"], "window_start": batch["window_start"],
            "window_end": batch["window_end"], "caption": np.asarray(captions, dtype=object),
            "error": np.asarray(errors, dtype=object),
            "frames": np.stack(frames) if same else _ragged(frames),
            "mask": np.stack(masks) if same else _ragged(masks)}


def shown_caption(meta: dict) -> str:
    """What a hit shows beside its video: its first caption, or where it has none (a corpus video), the name
    of its file."""
    return str(meta["captions"][0]) if meta["captions"] else posixpath.basename(str(meta["source"]))


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


class VideoEmbedder:
    """Callable class for `Dataset.map_batches`: uint8 frames -> embedding (plus the columns passed on)."""

    def __init__(self, adapter: dict[str, bytes], threads: int = 1, use_gpu: bool = False,
                 precision: str = DEFAULT_PRECISION,
                 compile_batch: int | None = None):
        """`compile_batch`: compile the video encoder for batches of exactly this many videos; shorter
        batches are padded to it, so that one graph serves every call."""
        import torch

        torch.set_num_threads(max(1, threads))
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("this embedding actor reserved a GPU but sees no CUDA device (driver, "
                               "CUDA_VISIBLE_DEVICES or a CPU-only torch build): refusing to run on the CPU")
        self.device = "cuda" if use_gpu else "cpu"
        self.model = load_from_files(adapter).to(self.device).for_inference(precision, compile=bool(compile_batch))
        self.compile_batch = compile_batch
        self.frames, self.size = self.model.config.frames, self.model.image_size
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(["x"]).shape[-1])

    def _misfit(self, frames: np.ndarray) -> str:
        if frames.shape[0] != self.frames:
            return f"ValueError: sample has {frames.shape[0]} frame slots, the model takes {self.frames}"
        if tuple(frames.shape[-2:]) != (self.size, self.size):
            return (f"ValueError: frames are {tuple(frames.shape[-2:])}, the model takes "
                    f"{self.size}x{self.size}")
        return ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from pipelines.shards.frames import normalise

        errors = [str(e) for e in batch["error"]]
        for i, e in enumerate(errors):
            if not e:
                errors[i] = self._misfit(batch["frames"][i])
        ok = [i for i, e in enumerate(errors) if not e]
        embedding = np.zeros((len(errors), self.dim), np.float32)
        if ok:
            pad = max(0, (self.compile_batch or 0) - len(ok))
            rows = ok + ok[:1] * pad
            frames = torch.from_numpy(np.stack([batch["frames"][i] for i in rows]))
            mask = torch.from_numpy(np.stack([batch["mask"][i] for i in rows]))
            if self.device == "cuda":
                frames = frames.pin_memory()
            frames = frames.to(self.device, non_blocking=True)
            with torch.inference_mode():   # the mask stays on the CPU, where checking it costs no sync
                out = self.model.encode_video(normalise(frames, mask.to(self.device)), mask)
            embedding[ok] = out[: len(ok)].float().cpu().numpy()
        return {**{c: batch[c] for c in PASSED_ON if c != "error"},
                "error": np.asarray(errors, dtype=object), "embedding": embedding}
