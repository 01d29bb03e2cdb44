"""A worker node lost in the middle of preprocessing (killed without warning, a fresh node added, as an
autoscaler would): the job finishes by itself, every video once, none recorded as failed."""
import collections
import sys

import pytest

from pipelines.shards.format import sample_table
from pipelines.storage.location import Location
from tests.fixtures.node_loss import run_losing_a_node
from tests.fixtures.video_fixtures import corpus_in_store

pytestmark = pytest.mark.slow    # a Ray cluster of three nodes in a process of its own

VIDEOS = 32


def test_a_worker_node_lost_mid_run_loses_and_fails_nothing(tmp_path, s3_server):
    root = Location.of(s3_server.prefix("node-loss"))
    manifest = corpus_in_store(root, tmp_path, VIDEOS, duration=6, size=(128, 96))
    result = run_losing_a_node([sys.executable, "-m", "jobs.preprocess", "--manifest", manifest, "--out",
                                root.child("shards").uri, "--samples-per-shard", "2", "--decoders", "2", "--frames",
                                "4", "--resolution", "64", "--progress-every", "0"],
                               trigger="preprocess: 2/")          # the first shard is done: lose a node now
    assert result["code"] == 0, "\n".join(result["lines"])
    assert any(f"decoded {VIDEOS} videos" in line for line in result["lines"]), result
    ids = sample_table(root.child("shards")).to_table(columns=["id", "error"]).to_pylist()
    assert collections.Counter(r["id"] for r in ids) == {f"v{i:02d}": 1 for i in range(VIDEOS)}
    assert not any(r["error"] for r in ids)                                # the loss is no video's failure
    print(f"node lost mid-run: the job finished in {result['seconds']:.1f} s")
