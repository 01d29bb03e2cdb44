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

VIDEOS = 24

DRIVER = r"""
import json, sys, threading, time
from ray.cluster_utils import Cluster
from pipelines.preprocess import PreprocessOptions, run_preprocess

out, manifest = sys.argv[1:3]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
events = []

def log(line):
    if "shards to make" in line:          # the decoding starts: lose a worker node a moment later
        def lose():
            time.sleep(3)
            cluster.remove_node(workers[0], allow_graceful=False)
            events.append("node killed")
            cluster.add_node(num_cpus=1)
            events.append("node added")
        threading.Thread(target=lose, daemon=True).start()

try:
    report = run_preprocess(PreprocessOptions(out=out, manifest=manifest, frames=4, resolution=64,
                                              samples_per_shard=2, decoders=2, progress_every=0,
                                              ray_address=cluster.address), log=log)
    print("RESULT " + json.dumps({"ok": report.ok, "processed": report.processed, "events": events,
                                  "failures": [f.error for f in report.failures], "seconds": report.seconds,
                                  "unwritten": report.shards_unwritten, "nodes": len(report.nodes)}))
finally:
    cluster.shutdown()
"""


def test_a_worker_node_lost_mid_run_loses_and_fails_nothing(tmp_path, s3_server):
    root = Location.of(s3_server.prefix("node-loss"))
    manifest = corpus_in_store(root, tmp_path, VIDEOS, duration=4, size=(128, 96))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", DRIVER, root.child("shards").uri, manifest],
                          cwd=os.getcwd(), env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["events"] == ["node killed", "node added"], result      # the loss fell inside the run
    assert result["ok"] and result["processed"] == VIDEOS and not result["failures"], result
    ids = sample_table(root.child("shards")).to_table(columns=["id", "error"]).to_pylist()
    assert collections.Counter(r["id"] for r in ids) == {f"v{i:02d}": 1 for i in range(VIDEOS)}
    assert not any(r["error"] for r in ids)
    print(f"node lost mid-run: finished in {result['seconds']:.1f} s, shards written by {result['nodes']} nodes")
