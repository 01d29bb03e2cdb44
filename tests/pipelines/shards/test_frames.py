"""The frame codec: stored JPEGs fill the first slots and the mask, padding is zero after normalisation, and
augmentation is one seeded draw for all frames of a video."""
import io

import numpy as np
import torch
from PIL import Image

from pipelines.shards.frames import decode_frames, frames_to_tensor, normalise


def jpeg(rgb) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), rgb, np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_frames_fill_the_first_slots_and_padding_is_zero():
    video, mask = decode_frames([jpeg((255, 0, 0))] * 3, 12)
    assert video.shape == (12, 3, 32, 32) and video.dtype == torch.uint8
    assert mask.tolist() == [True] * 3 + [False] * 9 and video[0, 0].float().mean() > 240
    x = normalise(video, mask)
    assert torch.all(x[3:] == 0) and x[:3, 0].mean() > 1.5          # red, normalised with CLIP's mean and std


def test_augment_is_one_draw_for_all_frames_and_seeded():
    jpegs = [jpeg((200, 40, 40))] * 3
    plain, _ = frames_to_tensor(jpegs, 12)
    changed = 0
    for seed in range(6):
        video, mask = frames_to_tensor(jpegs, 12, augment=True, seed=seed)
        assert torch.allclose(video[0], video[1], atol=1e-6) and torch.allclose(video[0], video[2], atol=1e-6)
        assert torch.equal(video, frames_to_tensor(jpegs, 12, augment=True, seed=seed)[0])
        changed += not torch.allclose(video[:3], plain[:3], atol=1e-3)
    assert changed >= 3
