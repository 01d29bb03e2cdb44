"""Two `tempme preprocess` runs started at once on one output folder, each with its own Ray: the folder's lease
(a conditional write) lets one write; the other stops before touching anything, naming the run that holds
the folder, or finds the work done if it came after. Either way every video is in the shards exactly once."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.shards.reader import SampleTable
from tests.pipelines.preprocess.test_job_growth import clips, row, write_manifest  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_two_runs_at_once_write_every_video_once(tmp_path, clips):  # noqa: F811
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.jsonl", [row(f"v{i}", clips[i % 4]) for i in range(8)])
    command = [sys.executable, "-m", "jobs.preprocess", "--manifest", str(manifest), "--out", str(out),
               "--frames", "2", "--resolution", "32", "--samples-per-shard", "2", "--ray-address", "local"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                             env=env, start_new_session=True) for _ in range(2)]
    try:
        said = [run.communicate(timeout=600)[0] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                os.killpg(run.pid, 9)
                run.wait()
    codes = sorted(run.returncode for run in runs)
    assert codes in ([0, 0], [0, 2]), said
    if codes == [0, 2]:      # started while the other held the folder: stopped at once, saying by whom
        (stopped,) = [text for run, text in zip(runs, said) if run.returncode == 2]
        assert "is writing this shard folder" in stopped and "preprocess run" in stopped, stopped
    else:                    # came after the other had finished: nothing left to decode
        assert any("0 new videos" in text for text in said), said
    ids = SampleTable.build([str(out)], "train").video_ids()
    assert sorted(ids) == [f"v{i}" for i in range(8)]              # each once: none lost, none twice
