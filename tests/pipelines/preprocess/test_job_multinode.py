"""The jobs on a Ray cluster of three nodes (a head with no CPUs, two workers with one CPU each), writing to the
S3 server: shards are written by the worker nodes (started without the store's endpoint, which the job hands
them), the driver writes next to none of their bytes, and the memory of the preprocessing and the embedding
drivers stays flat when the corpus grows from 200 to 2,000 videos (measured as the peak of the Python objects
each holds; its RSS, printed, also counts allocator and Ray caches)."""
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.shards.reader import SampleTable
from tests.fixtures.video_fixtures import lavfi_video

DRIVER = r"""
import json, os, sys, tracemalloc
import psutil, ray
from ray.cluster_utils import Cluster
from pipelines.embed import EmbedOptions, embed_corpus
from pipelines.preprocess import PreprocessOptions, run_preprocess, sources
from pipelines.storage.location import Location

def written():
    with open("/proc/self/io") as f:
        return dict(line.split(": ") for line in f.read().splitlines())["wchar"]

out, warm, small, large, adapter, tracking = sys.argv[1:7]
sources.BATCH_ROWS = 100     # what grows with a batch (up to 65,536 rows) is not what grows with the corpus
endpoint = os.environ.pop("AWS_ENDPOINT_URL")     # the nodes start without it, as on a cluster set up apart
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
os.environ["AWS_ENDPOINT_URL"] = endpoint        # the driver has it: the job hands it to the workers
try:
    result = {}
    tracemalloc.start()
    # a first run in another folder imports what each stage imports once, so that the runs measured after it
    # differ only by what they hold
    for name, manifest, folder in (("warm-up", warm, out + "-warm"), ("small", small, out), ("large", large, out)):
        tracemalloc.reset_peak()
        held = tracemalloc.get_traced_memory()[0]     # peaks are counted from what is held before each run
        before = int(written())
        report = run_preprocess(PreprocessOptions(out=folder, manifest=manifest, samples_per_shard=50, progress_every=0,
                                                  ray_address=cluster.address), log=lambda line: None)
        result["head"] = cluster.head_node.node_id    # the job joined the cluster as `tempme` would
        shard_bytes = sum(s["bytes"] for s in report.summary["splits"].values())
        result[name] = {"ok": report.ok, "processed": report.processed, "nodes": report.nodes,
                        "driver_wrote": int(written()) - before, "rss": psutil.Process().memory_info().rss,
                        "python_peak": tracemalloc.get_traced_memory()[1] - held,
                        "shard_bytes": shard_bytes}
        tracemalloc.reset_peak()
        held = tracemalloc.get_traced_memory()[0]
        embedded = embed_corpus(EmbedOptions(shards=(folder,), out=folder + "-index", model=adapter, batch_size=16,
                                             progress_every=0, tracking_uri=tracking, ray_address=cluster.address),
                                log=lambda line: None)
        result[name]["embed"] = {"embedded": embedded.embedded, "failed": embedded.failed,
                                 "python_peak": tracemalloc.get_traced_memory()[1] - held}
    print("RESULT " + json.dumps(result))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def manifest(path, clips, count):
    """A Parquet manifest: read and checked as columns (JSON lines are parsed into objects a batch at a time)."""
    pq.write_table(pa.Table.from_pylist([{"video": str(clips[i % len(clips)]), "id": f"v{i:05d}",
                                          "captions": [f"clip {i}"], "split": "train"} for i in range(count)]), path)
    return str(path)


@pytest.mark.slow
def test_worker_nodes_write_the_shards_and_the_drivers_stay_small(tmp_path, s3_server, trained_adapter):
    clips = [lavfi_video(tmp_path / f"c{i}.mp4", duration=2, size=(128, 96)) for i in range(8)]
    out = s3_server.prefix("multinode")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run([sys.executable, "-c", DRIVER, out, manifest(tmp_path / "warm.parquet", clips, 20),
                          manifest(tmp_path / "small.parquet", clips, 200),
                          manifest(tmp_path / "large.parquet", clips, 2000), str(trained_adapter),
                          f"sqlite:///{tmp_path}/mlflow.db"],
                         cwd=os.getcwd(), env=env, capture_output=True, text=True, timeout=1200)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    small, large = result["small"], result["large"]
    assert small["ok"] and large["ok"] and (small["processed"], large["processed"]) == (200, 1800)
    for run_result in (small, large):
        assert result["head"] not in run_result["nodes"] and len(run_result["nodes"]) == 2   # both workers wrote
        assert run_result["driver_wrote"] < 0.05 * run_result["shard_bytes"]
    new_bytes = large["shard_bytes"] - small["shard_bytes"]
    assert new_bytes > 30e6, result                       # enough that carrying them would show
    # what the driver holds in Python objects while it runs grows by a few bytes per video, not by its frames
    assert large["python_peak"] - small["python_peak"] < 0.25 * new_bytes, result
    per_video = (large["python_peak"] - small["python_peak"]) / 1800
    assert per_video < 500, result                        # planning holds columns, not an object per video
    print(f"driver: wrote {small['driver_wrote']} / {large['driver_wrote']} bytes, Python peak "
          f"{small['python_peak'] / 1e6:.1f} / {large['python_peak'] / 1e6:.1f} MB, RSS {small['rss'] / 1e6:.0f} / "
          f"{large['rss'] / 1e6:.0f} MB at 200 / 2,000 videos ({new_bytes / 1e6:.0f} MB of new shards, "
          f"{per_video:.0f} B of Python peak per added video)")
    assert len(SampleTable.build([out], "train")) == 2000
    # the embedding driver plans with columns too: what it holds does not grow with the videos it embeds
    embed_small, embed_large = small["embed"], large["embed"]
    assert (embed_small["embedded"], embed_large["embedded"], embed_large["failed"]) == (200, 1800, 0), result
    embed_per_video = (embed_large["python_peak"] - embed_small["python_peak"]) / 1800
    assert embed_per_video < 500, result
    print(f"embedding driver: Python peak {embed_small['python_peak'] / 1e6:.1f} / "
          f"{embed_large['python_peak'] / 1e6:.1f} MB at 200 / 2,000 videos ({embed_per_video:.0f} B per added video)")
