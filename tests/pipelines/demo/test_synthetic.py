"""The synthetic corpus: real H.264 files whose captions say what the frames show."""
import csv
import json

import numpy as np
import pytest

from pipelines.demo.synthetic import COLOURS, make_synthetic_corpus, plan_corpus
from pipelines.preprocess.decode import decode_video

RGB = {"red": (224, 48, 48), "green": (48, 192, 64), "blue": (48, 96, 224), "yellow": (224, 208, 48)}


def test_plan_is_deterministic_and_covers_both_splits():
    a, b = plan_corpus(10, seed=4), plan_corpus(10, seed=4)
    assert a == b and a != plan_corpus(10, seed=5)
    assert {v.split for v in a} == {"train", "test"} and sum(v.split == "test" for v in a) == 2
    assert len({(v.colour, v.shape, v.direction) for v in a}) == 10       # no repeats before all 32 combos
    assert {v.duration for v in a} == {4.0, 8.0, 12.0}
    with pytest.raises(ValueError):
        plan_corpus(0)


def test_videos_show_what_their_captions_say(synthetic_corpus):
    with open(synthetic_corpus, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and set(COLOURS) >= {r["colour"] for r in rows}
    seen_directions = set()
    for r in rows:
        captions = json.loads(r["captions"])
        assert captions[0] == f"a {r['colour']} {r['shape']} moving {r['direction']}" and len(captions) == 3
        if r["direction"] in seen_directions:
            continue
        seen_directions.add(r["direction"])
        video = decode_video(str(synthetic_corpus.parent / r["video"]), frames=12, fps=1, resolution=64, timeout=60)
        assert video.info.codec == "h264" and video.duration == pytest.approx(float(r["duration"]), abs=0.2)
        shape = np.abs(video.frames.astype(int) - 32).sum(-1) > 90          # pixels off the dark background
        colour = video.frames[shape].mean(0)
        assert np.abs(colour - RGB[r["colour"]]).max() < 40, (r, colour)
        ys, xs = zip(*[np.nonzero(m) for m in shape])
        centre = np.array([[x.mean(), y.mean()] for x, y in zip(xs, ys)])
        dx, dy = centre[-1] - centre[0]
        moved = {"left": -dx, "right": dx, "up": -dy, "down": dy}[r["direction"]]
        assert moved > 20 and moved > 3 * abs(dy if r["direction"] in ("left", "right") else dx), (r, centre)
    assert seen_directions == {"left", "right", "up", "down"}


def test_same_seed_same_corpus(tmp_path):
    one = make_synthetic_corpus(tmp_path / "a", n_videos=3, seed=7, durations=(2.0,))
    two = make_synthetic_corpus(tmp_path / "b", n_videos=3, seed=7, durations=(2.0,))
    assert one.read_text() == two.read_text()
    assert (one.parent / "syn0000.mp4").stat().st_size > 1000
