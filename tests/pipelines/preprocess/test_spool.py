"""The local disk a decode task uses: a download that would pass the task's limit (`--spool-gb`) fails as stage
"spool" before any byte is fetched, counting what the task already holds there; and each task asks Ray for its
spool where the nodes declare one, so a node runs no more tasks than its disk holds."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.preprocess.decode import decode_windows
from pipelines.preprocess.sampling import DecodeError
from pipelines.storage.location import Location, spool_dir, spool_use
from tests.fixtures.video_fixtures import lavfi_video
from tests.pipelines.preprocess.test_job_growth import clips, row, write_manifest  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


def _decode(video: Location, limit: int):
    return next(decode_windows(video, frames=2, fps=1.0, resolution=32, timeout=60, method="sequential",
                               spool_limit=limit))


def _mine() -> list[str]:
    return [name for name in os.listdir(spool_dir()) if name.startswith(f"{os.getpid()}-")]


def test_a_download_past_the_spool_limit_fails_before_any_byte(tmp_path, s3_server):
    video = Location.of(f"{s3_server.prefix('spool')}/clip.mp4")
    video.parent().make_dirs()
    video.write_atomic(lavfi_video(tmp_path / "clip.mp4", duration=2).read_bytes())
    size = video.info().size
    assert _mine() == [] and spool_use(os.getpid()) == 0
    with pytest.raises(DecodeError, match=r"clip.mp4 is 0.00 GB: .* would pass the 0.00 GB of local disk a task "
                                          r"may use \(--spool-gb\)") as told:
        _decode(video, size - 1)
    assert told.value.stage == "spool" and _mine() == []          # refused before anything was written
    assert len(_decode(video, size).frames) == 2 and _mine() == []  # it fits exactly; the download is removed

    held = Path(spool_dir()) / f"{os.getpid()}-shard-being-written.tar"   # what the task already holds counts
    held.write_bytes(b"\0" * 1000)
    try:
        assert spool_use(os.getpid()) == 1000
        with pytest.raises(DecodeError, match="with the 0.00 GB this task already holds"):
            _decode(video, size + 999)
        assert len(_decode(video, size + 1000).frames) == 2
    finally:
        held.unlink()


RUN = textwrap.dedent("""
    import json, sys, threading, time
    import ray
    from pipelines.preprocess import OptionsError, PreprocessOptions, run_preprocess
    ray.init(address="local", num_cpus=2, resources={"spool_gb": 4}, include_dashboard=False, log_to_driver=False)
    out, manifest = sys.argv[1], sys.argv[2]
    def options(gb):
        return PreprocessOptions(out=out, manifest=manifest, frames=2, resolution=32, samples_per_shard=1,
                                 progress_every=0, spool_gb=gb)
    try:
        run_preprocess(options(5), log=lambda line: None)
        refused = ""
    except OptionsError as e:
        refused = str(e)
    lowest, running = [4.0], [True]
    def watch():
        while running[0]:
            lowest[0] = min(lowest[0], ray.available_resources().get("spool_gb", 0.0))
            time.sleep(0.02)
    watcher = threading.Thread(target=watch)
    watcher.start()
    report = run_preprocess(options(3), log=lambda line: None)
    running[0] = False
    watcher.join(timeout=10)
    print(json.dumps({"refused": refused, "ok": report.ok, "processed": report.processed, "lowest": lowest[0]}))
""")


@pytest.mark.slow
def test_decode_tasks_ask_ray_for_the_spool_their_node_declares(tmp_path, clips):  # noqa: F811
    manifest = write_manifest(tmp_path / "m.jsonl", [row(f"v{i}", clips[i]) for i in range(4)])
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", RUN, str(out), str(manifest)], capture_output=True, text=True,
                          cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    # More than the node declares: refused before any work, since Ray could never schedule such a task.
    assert "--spool-gb 5: no node has that much: the most a node declares is 4 (spool_gb)" in said["refused"]
    assert said["ok"] and said["processed"] == 4
    assert said["lowest"] == 1.0     # a task held 3 of the node's 4: a second could not start beside it
