"""The object store that holds the index down for 30 s in the middle of an embedding run (SeaweedFS stopped,
then started again on its folder and port): the run finishes by itself, every video once, none failed."""
import os
import subprocess
import sys
import threading

import pytest

from pipelines.index import IndexStore
from tests.pipelines.embed.test_job import VIDEOS, tracking

pytestmark = pytest.mark.slow    # a job with its own Ray, and a 30 s outage
LIMIT_S = 600                    # the whole job, outage included


def test_a_30_s_outage_of_the_index_store_mid_run_loses_and_fails_nothing(
        synthetic_shards, trained_adapter, tmp_path, s3_server):
    uri = f"{s3_server.prefix('outage')}/index"
    command = [sys.executable, "-m", "jobs.embed", "--shards", str(synthetic_shards), "--model", str(trained_adapter),
               "--out", uri, "--workers", "1", "--batch-size", "4", "--part-rows", "4", "--progress-every", "0",
               "--tracking-uri", tracking(tmp_path), "--ray-address", "local"]
    errors = open(tmp_path / "stderr.txt", "w+")      # a file, not a pipe nobody drains while the job runs
    job = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": os.getcwd()}, stdout=subprocess.PIPE,
                           stderr=errors, text=True)
    watchdog = threading.Timer(LIMIT_S, job.kill)       # the loop below ends by this time, whatever the job does
    watchdog.start()
    outages, lines = [], []
    try:
        for line in job.stdout:                # the store goes down once the first videos are embedded
            lines.append(line)
            if line.startswith(f"embed: 4/{VIDEOS}") and not outages:
                outages.append(s3_server.outage(after_s=0, for_s=30))
        code = job.wait(timeout=LIMIT_S)
    finally:
        watchdog.cancel()
        job.kill()
        for outage in outages:
            outage.join(timeout=180)
    errors.seek(0)
    assert outages and code == 0, "".join(lines) + errors.read()[-3000:]
    assert any(f"{VIDEOS}/{VIDEOS} videos done, 0 failed" in line for line in lines), lines
    ids = IndexStore(uri).open().video_ids()
    assert len(ids) == VIDEOS and len(set(ids)) == VIDEOS
    assert IndexStore(uri).failures().num_rows == 0
