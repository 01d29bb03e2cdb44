"""Compacting a folder: shards with removed videos written again without their bytes, swapped in one commit."""
import os
import tarfile

import pyarrow.parquet as pq
import torch

from pipelines.preprocess import run_preprocess
from pipelines.preprocess.compact import CompactOptions, compact_shards
from pipelines.shards.reader import SampleTable, current_thumbnail
from pipelines.shards.stream import split_videos
from tests.pipelines.preprocess.test_job_growth import clips, options, row, write_manifest  # noqa: F401

quiet = {"log": lambda line: None}


def test_removed_videos_leave_the_bytes_and_the_rest_reads_the_same(tmp_path, clips, ray_cluster):  # noqa: F811
    out, manifest = tmp_path / "out", tmp_path / "m.jsonl"
    everyone = [row(f"a{i}", clips[i % 4]) for i in range(6)]            # shards of two: a0 a1 | a2 a3 | a4 a5
    run_preprocess(options(out, write_manifest(manifest, everyone)), **quiet)
    before = {item["id"]: item["video"] for item in split_videos([str(out)], "train")}
    kept = [r for r in everyone if r["id"] not in ("a1", "a3")]
    run_preprocess(options(out, write_manifest(manifest, kept)), **quiet)

    report = compact_shards(CompactOptions(folder=str(out), min_removed=0.5), **quiet)
    assert report.shards == {"train-000000.tar": "train-000000.g1.tar", "train-000001.tar": "train-000001.g1.tar"}
    with tarfile.open(out / "train-000000.g1.tar") as tar:
        assert {m.name.split(".")[0] for m in tar.getmembers()} == {"a0"}           # a1's bytes are gone
    after = {item["id"]: item["video"] for item in split_videos([str(out)], "train")}
    assert sorted(after) == ["a0", "a2", "a4", "a5"]
    assert all(torch.equal(after[k], before[k]) for k in after)                   # the same bytes, moved
    assert SampleTable.build([str(out)], "train").video_ids() == ["a0", "a2", "a4", "a5"]
    retired = pq.read_table(out / "_retired.parquet")["shard"].to_pylist()
    assert retired == ["train-000000.tar", "train-000001.tar"] and os.path.exists(out / "train-000000.tar")

    again = run_preprocess(options(out, manifest), **quiet)                       # compacted shards are finished
    assert again.ok and again.processed == 0

    # the old tars go once retired for longer than `keep`; a reader told the old tar finds the new one
    compact_shards(CompactOptions(folder=str(out), min_removed=0.5, keep_days=0), **quiet)
    assert not os.path.exists(out / "train-000000.tar") and os.path.exists(out / "train-000002.tar")
    moved = current_thumbnail(str(out / "train-000000.tar"), "a0")
    assert moved is not None and moved[0] == str(out / "train-000000.g1.tar")
    with open(moved[0], "rb") as f:
        f.seek(moved[1])
        assert f.read(3) == b"\xff\xd8\xff"                                       # a JPEG

    # a removed video that comes back is a failure until `--retry-failed` decodes it again
    back = run_preprocess(options(out, write_manifest(manifest, kept + [row("a1", clips[1])])), **quiet)
    assert [(f.id, f.stage) for f in back.failures] == [("a1", "compacted")]
    retried = run_preprocess(options(out, manifest, retry_failed=True), **quiet)
    assert retried.ok and retried.processed == 1
    assert sorted(SampleTable.build([str(out)], "train").video_ids()) == ["a0", "a1", "a2", "a4", "a5"]
