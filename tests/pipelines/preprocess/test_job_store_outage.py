"""The object store down for 30 s in the middle of preprocessing (SeaweedFS stopped, then started again on
its folder and port): the job finishes by itself, every video once, none recorded as failed."""
import collections

import pytest

from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.shards.format import sample_table
from pipelines.storage.location import Location
from tests.fixtures.video_fixtures import corpus_in_store

pytestmark = pytest.mark.slow    # waits a 30 s outage out

VIDEOS = 32


def test_a_30_s_outage_of_the_store_mid_run_loses_and_fails_nothing(tmp_path, s3_server, ray_cluster):
    root = Location.of(s3_server.prefix("outage"))
    manifest = corpus_in_store(root, tmp_path, VIDEOS, duration=3, size=(64, 48))
    lines, outages = [], []

    def log(line):           # the store goes down once the first shard is done, with 31 shards to go one by one
        lines.append(line)
        if "videos done" in line and not outages:
            outages.append(s3_server.outage(after_s=0, for_s=30))
    try:
        report = run_preprocess(PreprocessOptions(out=root.child("shards").uri, manifest=manifest,
                                                  frames=4, resolution=32, samples_per_shard=1, decoders=1,
                                                  progress_every=0), log=log)
    finally:
        for outage in outages:
            outage.join(timeout=180)
    assert len(outages) == 1
    assert report.ok, (report.failures, report.shards_unwritten, lines)
    assert report.processed == VIDEOS and not report.failures
    ids = sample_table(root.child("shards")).to_table(columns=["id", "error"]).to_pylist()
    assert collections.Counter(r["id"] for r in ids) == {f"v{i:02d}": 1 for i in range(VIDEOS)}
    assert all(not r["error"] for r in ids)
    assert report.seconds > 30           # the outage did fall inside the run
    print(f"30 s store outage mid-run: finished in {report.seconds:.1f} s")
