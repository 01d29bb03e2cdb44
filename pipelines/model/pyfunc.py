"""A registered adapter as an MLflow pyfunc model: `mlflow.pyfunc.load_model("models:/NAME@champion")` embeds
texts (and videos given as frame arrays) with this project's code, and `mlflow models serve` serves it.

A registered version's artifacts are the adapter directory itself (what `resolve_model` downloads and every
stage loads) plus the pyfunc files that `pyfunc_files.write_pyfunc_files` adds at its top level: `MLmodel`, whose
python_function flavor names this module as its loader and carries no `data` entry (MLflow then hands
`_load_pyfunc` the model folder, which *is* the adapter directory), and the environment files MLflow expects.
The model code is not copied into the model: load or serve it where this project is importable (its own
environment, `mlflow models serve --env-manager local`).

`predict` accepts
  - texts: a DataFrame with a `text` column, a list (or 1-D array, Series) of strings, a single string, or
    {"text": [...]} (what the scoring server makes of `{"inputs": {"text": [...]}}`);
  - videos: {"frames": uint8 [N, T, H, W, 3] or [N, T, 3, H, W], "mask": optional bool [N, T] (True = real
    frame)}, T, H and W as the model takes them,
and returns float32 [N, D] L2-normalised embeddings (texts and videos share the space).

The signature records the output only: an input schema would make MLflow coerce every input into a
DataFrame of its columns before `predict` sees it, which a frames array cannot survive. The inputs are
checked here instead, with errors that say what is wrong.

Loading options (`model_config`, overridable with `mlflow.pyfunc.load_model(uri, model_config={...})` or the
`MLFLOW_PYFUNC_INFERENCE_CONFIG` JSON environment variable of the server): `device` (auto: cuda when present),
`precision` (auto: bf16 where the hardware computes it natively; see `tempme.inference_dtype`), and the
largest number of texts and of videos encoded in one pass.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.model.pyfunc_files import DEFAULT_CONFIG, INPUTS
from pipelines.model.registry import model_from_adapter
from tempme.errors import UserError


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> TempMePyfunc:
    """MLflow's entry point: `data_path` is the downloaded model folder, an adapter directory."""
    return TempMePyfunc.load(data_path, model_config)


class TempMePyfunc:
    """The pyfunc implementation: a TempMe model in its inference form, and input checking."""

    def __init__(self, model, text_batch: int = DEFAULT_CONFIG["text_batch"],
                 video_batch: int = DEFAULT_CONFIG["video_batch"]):
        if text_batch < 1 or video_batch < 1:
            raise UserError(f"text_batch and video_batch must be >= 1, got {text_batch} and {video_batch}")
        self.model = model
        self.text_batch, self.video_batch = int(text_batch), int(video_batch)

    @classmethod
    def load(cls, adapter_dir: str | Path, model_config: dict[str, Any] | None = None) -> TempMePyfunc:
        import torch

        options = {**DEFAULT_CONFIG, **(model_config or {})}
        unknown = sorted(set(options) - set(DEFAULT_CONFIG))
        if unknown:
            raise UserError(f"unknown model_config keys {unknown}; the tempme pyfunc model takes "
                             f"{sorted(DEFAULT_CONFIG)}")
        device = options["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = model_from_adapter(adapter_dir)
        model.to(device).for_inference(options["precision"])
        return cls(model, options["text_batch"], options["video_batch"])

    def get_raw_model(self):
        """The TempMe model itself (`PyFuncModel.get_raw_model()`)."""
        return self.model

    def predict(self, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        """Texts or videos (see the module docstring) -> float32 [N, D] L2-normalised embeddings."""
        if isinstance(model_input, dict):
            keys = set(model_input)
            if "frames" in keys and "text" in keys:
                raise UserError("give either texts ('text') or videos ('frames', 'mask') in one call, not both")
            if "frames" in keys:
                extra = sorted(keys - {"frames", "mask"})
                if extra:
                    raise UserError(f"a video input takes the keys 'frames' and 'mask', got also {extra}")
                return self.encode_videos(model_input["frames"], model_input.get("mask"))
            if "text" not in keys:
                raise UserError(f"expected a 'text' key (texts) or a 'frames' key (videos), got keys "
                                 f"{sorted(map(str, keys))}")
            return self.encode_texts(_texts(model_input["text"]))
        return self.encode_texts(_texts(model_input))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        _check_texts(texts)
        with torch.inference_mode():
            parts = [self.model.encode_text(texts[i:i + self.text_batch]).float().cpu().numpy()
                     for i in range(0, len(texts), self.text_batch)]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def encode_videos(self, frames, mask=None) -> np.ndarray:
        import torch

        from pipelines.shards.frames import normalise

        frames, mask = self._check_videos(frames, mask)
        device = self.model.device
        parts = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.video_batch):
                video = torch.from_numpy(frames[i:i + self.video_batch]).to(device)
                if video.shape[-1] == 3 and video.shape[2] != 3:
                    video = video.permute(0, 1, 4, 2, 3).contiguous()   # [N,T,H,W,3] -> [N,T,3,H,W]
                valid = torch.from_numpy(mask[i:i + self.video_batch])   # stays on the CPU: see encode_video
                out = self.model.encode_video(normalise(video, valid), valid)
                parts.append(out.float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def _check_videos(self, frames, mask) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames)
        if frames.ndim != 5:
            raise UserError(f"'frames' must be [videos, frames, H, W, 3] or [videos, frames, 3, H, W], got "
                             f"shape {frames.shape}")
        if len(frames) == 0:
            raise UserError("'frames' holds no videos to encode")
        if frames.dtype != np.uint8:
            if frames.dtype.kind not in "iu" or frames.min() < 0 or frames.max() > 255:
                raise UserError(f"'frames' must be uint8 pixel values 0-255 (as decoded), got dtype "
                                 f"{frames.dtype}" + (f" with values {frames.min()}..{frames.max()}"
                                                      if frames.dtype.kind in "iuf" else ""))
            frames = frames.astype(np.uint8)
        n, t = frames.shape[:2]
        if frames.shape[-1] == 3 and frames.shape[2] != 3:
            h, w = frames.shape[2:4]
        elif frames.shape[2] == 3:
            h, w = frames.shape[3:5]
        else:
            raise UserError(f"'frames' must have 3 colour channels, last ([N,T,H,W,3]) or third "
                             f"([N,T,3,H,W]); got shape {frames.shape}")
        size, wanted = self.model.image_size, self.model.config.frames
        if t != wanted:
            raise UserError(f"'frames' has {t} frame slots per video, the model takes {wanted} (pad with "
                             f"zero frames and mark them False in 'mask')")
        if (h, w) != (size, size):
            raise UserError(f"frames are {h}x{w}, the model takes {size}x{size}")
        if mask is None:
            return np.ascontiguousarray(frames), np.ones((n, t), dtype=bool)
        mask = np.asarray(mask)
        if mask.shape != (n, t):
            raise UserError(f"'mask' must be [videos, frames] = {(n, t)}, got shape {mask.shape}")
        if mask.dtype != np.bool_:
            if mask.dtype.kind not in "iu" or not np.isin(mask, (0, 1)).all():
                raise UserError(f"'mask' must be booleans (True = real frame), got dtype {mask.dtype}")
            mask = mask.astype(bool)
        empty = np.flatnonzero(~mask.any(axis=1)).tolist()
        if empty:
            raise UserError(f"'mask' leaves videos {empty} without any real frame")
        return np.ascontiguousarray(frames), np.ascontiguousarray(mask)


def _texts(model_input) -> list:
    """The list of texts in any of the accepted text inputs (checked by `_check_texts`)."""

    if isinstance(model_input, pd.DataFrame):
        if "text" not in model_input.columns:
            raise UserError(f"the input DataFrame has no 'text' column (its columns: "
                             f"{[str(c) for c in model_input.columns]}); texts go in a 'text' column")
        return model_input["text"].tolist()
    if isinstance(model_input, pd.Series):
        return model_input.tolist()
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, np.ndarray):
        if model_input.ndim == 2 and model_input.shape[1] == 1:
            model_input = model_input[:, 0]
        if model_input.ndim != 1:
            raise UserError(f"texts given as an array must be 1-D, got shape {model_input.shape}")
        return model_input.tolist()
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    raise UserError(f"unsupported input {type(model_input).__name__}: expected {INPUTS}")


def _check_texts(texts: list) -> None:
    if not texts:
        raise UserError("no texts to encode: the input holds an empty list of texts")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise UserError(f"texts must be strings; entries {bad[:5]} are "
                         f"{[type(texts[i]).__name__ for i in bad[:5]]}")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise UserError(f"texts must not be blank; entries {blank[:5]} are empty or whitespace")
