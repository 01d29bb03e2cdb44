import numpy as np
import pytest

import tempme
from tempme.visualize import render_groups, token_groups, visualize_merges


@pytest.fixture(scope="module")
def moving_square():
    frames = np.full((12, 224, 224, 3), 30, np.uint8)
    for t in range(12):
        frames[t, 64:128, 12 * t:12 * t + 64] = (220, 40, 40)
    return frames


def test_groups_cover_every_patch_once_per_final_token(moving_square):
    model = tempme.load_model("tempme-tiny-12f")
    groups = token_groups(model, moving_square)
    assert groups.shape == (12, 7, 7)
    # 1x97 final tokens, 12 of them CLS: the 85 others each own at least one patch
    assert len(np.unique(groups)) == 97 - 12
    # temporal merging: some token holds patches of more than one frame
    frames_per_group = [len({t for t in range(12) if (groups[t] == g).any()}) for g in np.unique(groups)]
    assert max(frames_per_group) > 1


def test_without_merging_every_patch_is_its_own_group(moving_square):
    groups = token_groups(tempme.load_model("lora-tiny-12f"), moving_square)
    assert len(np.unique(groups)) == 12 * 49


def test_picture_puts_frames_side_by_side(moving_square):
    image = visualize_merges(tempme.load_model("tome-tiny-12f"), moving_square)
    assert image.size == (12 * 224, 224)
    groups = np.arange(12 * 49).reshape(12, 7, 7)
    picture = np.asarray(render_groups(moving_square, groups))
    assert (picture[10, 32] == 0).all() and (picture[10, 16] != 0).any()  # a border between distinct groups only
