"""A worker node lost in the middle of preprocessing (killed without warning, a fresh node added, as an
autoscaler would): the job finishes by itself, every video once, none recorded as failed."""
import collections
import json
import os
import subprocess
import sys

import pytest

from pipelines.shard_format import sample_table
from pipelines.storage import Location
from tests.fixtures.video_fixtures import corpus_in_store

pytestmark = pytest.mark.slow    # a Ray cluster of three nodes in a process of its own

VIDEOS = 32

DRIVER = r"""
import json, os, subprocess, sys, time
from ray.cluster_utils import Cluster

out, manifest = sys.argv[1:3]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
events, lines = [], []
try:
    job = subprocess.Popen([sys.executable, "-m", "jobs.preprocess", "--manifest", manifest, "--out", out,
                            "--samples-per-shard", "2", "--decoders", "2", "--frames", "4", "--resolution", "64",
                            "--progress-every", "0", "--ray-address", cluster.address],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    for line in job.stdout:
        lines.append(line.rstrip())
        if line.startswith("preprocess: 2/") and not events:   # the first shard is done: lose a node now
            cluster.remove_node(workers[0], allow_graceful=False)
            events.append("node killed")
            cluster.add_node(num_cpus=1)
            events.append("node added")
    code = job.wait(timeout=600)
    print("RESULT " + json.dumps({"code": code, "events": events, "seconds": time.monotonic() - started,
                                  "lines": lines[-12:]}))
finally:
    cluster.shutdown()
"""


def test_a_worker_node_lost_mid_run_loses_and_fails_nothing(tmp_path, s3_server):
    root = Location.of(s3_server.prefix("node-loss"))
    manifest = corpus_in_store(root, tmp_path, VIDEOS, duration=6, size=(128, 96))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", DRIVER, root.child("shards").uri, manifest],
                          cwd=os.getcwd(), env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["events"] == ["node killed", "node added"], result      # the loss fell inside the run
    assert result["code"] == 0, result
    assert any(f"decoded {VIDEOS} videos" in line for line in result["lines"]), result
    ids = sample_table(root.child("shards")).to_table(columns=["id", "error"]).to_pylist()
    assert collections.Counter(r["id"] for r in ids) == {f"v{i:02d}": 1 for i in range(VIDEOS)}
    assert not any(r["error"] for r in ids)                                # the loss is no video's failure
    print(f"node lost mid-run: the job finished in {result['seconds']:.1f} s")
