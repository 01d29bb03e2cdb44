"""A worker node lost in the middle of an embedding run (killed without warning, a fresh node added): the
job finishes by itself, every video once in the index, none recorded as failed."""
import sys

import pytest

from pipelines.index import IndexStore
from tests.fixtures.node_loss import run_losing_a_node
from tests.pipelines.embed.test_job import VIDEOS, tracking

pytestmark = pytest.mark.slow    # a Ray cluster of three nodes in a process of its own


def test_a_worker_node_lost_mid_run_loses_and_fails_nothing(synthetic_shards, trained_adapter, tmp_path, s3_server):
    uri = f"{s3_server.prefix('node-loss')}/index"
    command = [sys.executable, "-m", "jobs.embed", "--shards", str(synthetic_shards), "--model", str(trained_adapter),
               "--out", uri, "--workers", "1", "--batch-size", "4", "--part-rows", "4", "--progress-every", "0",
               "--tracking-uri", tracking(tmp_path)]
    result = run_losing_a_node(command, trigger="embed: 4/", cpus=2)   # the first videos are in: lose a node
    assert result["code"] == 0, "\n".join(result["lines"])
    assert any(f"{VIDEOS}/{VIDEOS} videos done, 0 failed" in line for line in result["lines"]), result["lines"]
    ids = IndexStore(uri).open().video_ids()
    assert len(ids) == VIDEOS and len(set(ids)) == VIDEOS
    assert IndexStore(uri).failures().num_rows == 0
    print(f"node lost mid-run: the embedding job finished in {result['seconds']:.1f} s")
