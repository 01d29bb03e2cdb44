"""SIGKILL the preprocessing job mid-way, re-run it: every good video exactly once, no partial shard visible."""
import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from pipelines.preprocess.writer import finished_shards
from pipelines.storage.location import Location
from tests.fixtures.video_fixtures import lavfi_video

pytestmark = pytest.mark.slow   # two whole preprocessing jobs, each with its own Ray

VIDEOS = 12


def job(manifest, out, log):
    command = [sys.executable, "-m", "jobs.preprocess", "--manifest", str(manifest), "--out", str(out),
               "--samples-per-shard", "2", "--decoders", "1", "--frames", "4", "--resolution", "64",
               "--ray-address", "local", "--progress-every", "0"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log, "w") as f:   # its own session: the kill takes the job and the Ray it starts
        return subprocess.Popen(command, cwd=os.getcwd(), env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finished(out):
    """The shards whose rows the job committed to the sample table."""
    return sorted(finished_shards(Location.of(str(out)))) if (out / "_samples.lance" / "_versions").exists() else []


def settled(out, quiet_s=3.0, limit_s=60.0):
    """Wait until no shard has finished for `quiet_s` seconds."""
    seen, since, deadline = finished(out), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        if (now := finished(out)) != seen:
            seen, since = now, time.monotonic()


def test_sigkill_then_rerun_ends_with_every_video_exactly_once(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    rows = []
    for i in range(VIDEOS):
        lavfi_video(videos / f"v{i:02d}.mp4", duration=6, size=(480, 270), fps=30, extra=("-preset", "ultrafast"))
        rows.append({"video": f"videos/v{i:02d}.mp4", "id": f"v{i:02d}", "captions": [f"clip {i}"], "split": "train"})
    (videos / "broken.mp4").write_bytes(b"not a video" * 100)
    rows.append({"video": "videos/broken.mp4", "id": "broken", "captions": ["x"], "split": "train"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"

    first = job(manifest, out, tmp_path / "first.log")
    deadline = time.monotonic() + 180
    while not finished(out) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)           # the job and the local Ray it started, mid-way
    first.wait()
    settled(out)                                   # a worker may finish the shard it was writing as it dies
    done_before = {n: os.stat(out / n).st_mtime_ns for n in finished(out)}
    assert first.returncode == -signal.SIGKILL and 1 <= len(done_before) < 7, (tmp_path / "first.log").read_text()

    for name in os.listdir(out):                   # whatever tar is visible is whole
        if name.endswith(".tar"):
            with tarfile.open(out / name) as tar:
                assert all(tar.extractfile(m).read() for m in tar.getmembers())

    second = job(manifest, out, tmp_path / "second.log")
    second.wait(timeout=300)
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 1, log                  # 1: an input failed (the broken file)
    assert f"{len(done_before)} shards already done" in log

    ids = []
    for name in sorted(os.listdir(out)):
        assert ".partial-" not in name
        if name.endswith(".tar"):
            with tarfile.open(out / name) as tar:
                ids += [json.load(tar.extractfile(m))["id"] for m in tar.getmembers() if m.name.endswith(".json")]
    assert sorted(ids) == [f"v{i:02d}" for i in range(VIDEOS)]          # each exactly once
    with open(out / "_failures.csv", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["broken"]
    assert {n: os.stat(out / n).st_mtime_ns for n in done_before} == done_before   # not redone
