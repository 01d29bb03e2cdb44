"""The one progress line of every stage: done of total, failures, rate and time left."""
import pytest

from pipelines.cluster import progress as progress_module
from pipelines.cluster.progress import Progress


@pytest.fixture
def clock(monkeypatch):
    """A clock the test moves by hand."""
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_videos_done_failures_rate_and_eta(clock):
    lines = []
    progress = Progress("embed", 100, every=10.0, log=lines.append)
    clock[0] += 5
    progress.update(10, failed=2)
    assert lines == []                                   # not every update: at most every 10 s
    clock[0] += 5
    progress.update(10)
    assert lines == ["embed: 20/100 videos done, 2 failed, 2.00 videos/s, ETA 0:40"]


def test_resumed_steps_count_but_not_in_the_rate(clock):
    lines = []
    steps = Progress("train", 10000, every=0, log=lines.append, unit="steps", done=1000, failures=False)
    clock[0] += 100
    steps.update(200, detail="epoch 3/10, train_loss=1.5")
    assert lines == ["train: 1200/10000 steps done, 2.00 steps/s, ETA 1:13:20; epoch 3/10, train_loss=1.5"]
    assert Progress("x", 10, 0, lines.append).eta() == "?"        # nothing done yet: no estimate
