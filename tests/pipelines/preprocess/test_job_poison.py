"""A video that kills the worker decoding it (as an out-of-memory kill or a crash would) is one failure row,
not a failed job; its shard is written with the other videos, and only --retry-failed tries it again."""
import json
import os
import signal
import threading
import time

import psutil

from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.shards.reader import SampleTable
from tests.fixtures.video_fixtures import lavfi_video


class WorkerKiller:
    """Kills (SIGKILL) every Ray worker process the moment it decodes a file named `poison`: runs ffmpeg on it,
    or holds it open to decode it in-process."""

    def __init__(self, marker: str):
        self.marker, self.kills, self.stop = marker, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            for p in psutil.process_iter(["name", "cmdline"]):
                try:
                    if "ffmpeg" in (p.info["name"] or "") and any(self.marker in a for a in p.info["cmdline"] or []):
                        worker = p.parent()
                    elif (p.info["name"] or "").startswith("ray::") and any(self.marker in f.path
                                                                             for f in p.open_files()):
                        worker = p
                    else:
                        continue
                    if worker is not None and worker.pid != os.getpid():
                        worker.send_signal(signal.SIGKILL)
                        self.kills += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_a_video_that_kills_its_worker_is_one_failure_row(tmp_path, ray_cluster):
    videos = tmp_path / "videos"
    videos.mkdir()
    # long enough (a few seconds of decoding) for the killer to see its ffmpeg
    lavfi_video(videos / "poison.mp4", duration=240, fps=30, size=(320, 240), extra=("-preset", "ultrafast"))
    rows = [{"video": str(lavfi_video(videos / f"ok{i}.mp4", duration=2)), "id": f"ok{i}", "captions": ["c"],
             "split": "train"} for i in range(3)]
    rows.append({"video": str(videos / "poison.mp4"), "id": "poison", "captions": ["c"], "split": "train"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = PreprocessOptions(out=str(tmp_path / "out"), manifest=str(manifest), frames=2, resolution=32,
                                samples_per_shard=4, progress_every=0)

    with WorkerKiller("poison.mp4") as killer:
        report = run_preprocess(options, log=lambda line: None)
        assert killer.kills >= 2          # the shard's task, then the poison's own task in isolation
    assert [(f.id, f.stage) for f in report.failures] == [("poison", "worker")]
    assert "died" in report.failures[0].error and report.shards_written == ["train-000000.tar"]
    assert sorted(SampleTable.build([options.out], "train").video_ids()) == ["ok0", "ok1", "ok2"]

    again = run_preprocess(options, log=lambda line: None)           # not tried again unless asked
    assert again.processed == 0 and [f.id for f in again.failures] == ["poison"]

    retried = run_preprocess(PreprocessOptions(**{**options.__dict__, "retry_failed": True}), log=lambda line: None)
    assert retried.ok and retried.processed == 1 and retried.shards_written == ["train-000001.tar"]
    assert sorted(SampleTable.build([options.out], "train").video_ids()) == ["ok0", "ok1", "ok2", "poison"]
