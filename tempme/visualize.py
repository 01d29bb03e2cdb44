"""Which input patches each final token of the video encoder stands for, across frames, as a picture.

The encoder is run with `trace=True`: every token carries a row saying which of the T x N0 input tokens it
has absorbed. Each final token's group of patches is painted in one colour over the frames, laid side by
side, so merges across time show up as the same colour in several frames.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tempme.model import CLIP_MEAN, CLIP_STD, TempMeModel


def frames_to_model_input(frames: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames (already image_size square) -> CLIP-normalised [1, T, 3, H, W]."""
    if frames.ndim != 4 or frames.shape[1:] != (image_size, image_size, 3):
        raise ValueError(f"frames must be [T, {image_size}, {image_size}, 3] uint8, got {frames.shape}")
    x = torch.from_numpy(frames).float().div(255).permute(0, 3, 1, 2)
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    return x[None]


def token_groups(model: TempMeModel, frames: np.ndarray, valid: int | None = None) -> np.ndarray:
    """[T, g, g] id of the final token that each input patch of each frame ended up in."""
    video = frames_to_model_input(frames, model.image_size).to(model.device)
    mask = None
    if valid is not None:
        mask = torch.arange(video.shape[1], device=video.device)[None] < valid
    with torch.no_grad():
        source = model.encode_video_full(video, mask, trace=True).source[0]      # [final tokens, T*N0]
    t = frames.shape[0]
    n0 = source.shape[1] // t
    owner = source.argmax(dim=0).view(t, n0)[:, 1:]                              # drop each frame's CLS
    grid = int(round((n0 - 1) ** 0.5))
    return owner.view(t, grid, grid).cpu().numpy()


def render_groups(frames: np.ndarray, groups: np.ndarray, opacity: float = 0.6, seed: int = 0) -> Image.Image:
    """Frames side by side, each patch blended with the colour of its token group, groups outlined."""
    t, height, width, _ = frames.shape
    grid = groups.shape[1]
    cell_h, cell_w = height // grid, width // grid
    pixels = groups.repeat(cell_h, axis=1).repeat(cell_w, axis=2)               # [T, grid*cell_h, grid*cell_w]
    h, w = pixels.shape[1:]
    palette = np.random.default_rng(seed).integers(40, 256, size=(int(groups.max()) + 1, 3))
    painted = frames.astype(np.float32)
    painted[:, :h, :w] = (1 - opacity) * painted[:, :h, :w] + opacity * palette[pixels]
    border = np.zeros_like(pixels, dtype=bool)
    border[:, 1:, :] |= pixels[:, 1:, :] != pixels[:, :-1, :]
    border[:, :, 1:] |= pixels[:, :, 1:] != pixels[:, :, :-1]
    painted[:, :h, :w][border] = 0
    return Image.fromarray(np.concatenate(list(painted.clip(0, 255).astype(np.uint8)), axis=1))


def visualize_merges(model: TempMeModel, frames: np.ndarray, valid: int | None = None) -> Image.Image:
    """The merge picture of one video given as uint8 frames [T, H, W, 3] at the model's image size."""
    return render_groups(frames, token_groups(model, frames, valid))
