"""JPEG frames of a sample -> the model's input: uint8 tensors with a mask, normalised on the device.

Apart from `pipelines.shards.reader` (which reads the samples' bytes and imports no torch), so that a driver that only
plans never loads torch; the processes that decode frames (training, evaluation, embedding) import this.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from tempme import CLIP_MEAN, CLIP_STD


def decode_frames(jpegs: Sequence[bytes], frames: int, augment: bool = False, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG frames -> (video [frames,3,H,W] uint8, mask [frames] bool): the stored frames fill the first
    slots and the mask, the rest are zeros. With `augment`, one RandAugment draw (seeded by `seed`) is applied
    to all frames alike, so motion between frames is kept. uint8 travels at a quarter of float32's size."""
    from torchvision.io import ImageReadMode, decode_jpeg

    pics = torch.stack(decode_jpeg([torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs],
                                   mode=ImageReadMode.RGB))
    if augment:
        pics = _rand_augment(pics, seed)
    video = torch.zeros((frames, *pics.shape[1:]), dtype=torch.uint8)
    video[: len(pics)] = pics
    mask = torch.zeros(frames, dtype=torch.bool)
    mask[: len(pics)] = True
    return video, mask


def normalise(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """uint8 frames [..., T, 3, H, W] -> float32 normalised with CLIP mean/std, padding frames zero (as the
    paper's code has them); runs wherever `video` lives, e.g. on the GPU after a uint8 copy."""
    x = video.float().div_(255)
    x.sub_(_CLIP_MEAN.to(x.device)).div_(_CLIP_STD.to(x.device))
    return x.mul_(mask[..., None, None, None].to(x.device))


def frames_to_tensor(jpegs: Sequence[bytes], frames: int, augment: bool = False, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG frames -> (video [frames,3,H,W] float32 normalised, mask [frames] bool), for readers on the CPU."""
    video, mask = decode_frames(jpegs, frames, augment, seed)
    return normalise(video, mask), mask


_CLIP_MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
_CLIP_STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1)


@functools.lru_cache(maxsize=1)
def _rand_augment_op():
    from torchvision.transforms import v2

    return v2.RandAugment()


def _rand_augment(pics: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision RandAugment on [V,3,H,W] uint8: one draw of ops for the whole stack, from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _rand_augment_op()(pics)
