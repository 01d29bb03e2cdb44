"""A corpus that grows and shrinks between runs over the same output folder: only new videos are decoded, into
new shards after the last; finished shards are never rewritten; videos that left are recorded and skipped by
the readers; transient failures wait for --retry-failed."""
import csv
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.preprocess import OptionsError, PreprocessOptions, run_preprocess
from pipelines.preprocess.inputs import collect_inputs
from pipelines.preprocess.plan import plan_new, write_plans
from pipelines.preprocess.sources import read_manifest
from pipelines.shards.format import CATALOG_DIR, OPTIONS
from pipelines.shards.reader import SampleTable
from pipelines.shards.stream import split_videos
from pipelines.storage.location import Location
from tests.fixtures.video_fixtures import lavfi_video


def write_manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(vid, video, split="train"):
    return {"video": str(video), "id": vid, "captions": [f"clip {vid}"], "split": split}


def stamps(out):
    """Modification times of every shard, index and plan: what must never change for finished work."""
    names = [n for n in os.listdir(out) if n.endswith(".tar")]
    names += [f"_index/{n}" for n in os.listdir(out / "_index")] + [f"_plans/{n}" for n in os.listdir(out / "_plans")]
    return {n: os.stat(out / n).st_mtime_ns for n in names}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [lavfi_video(folder / f"c{i}.mp4", duration=2, size=(48, 32)) for i in range(4)]


def options(out, manifest, **kw):
    return PreprocessOptions(out=str(out), manifest=str(manifest), frames=2, resolution=32, samples_per_shard=2,
                             decoders=2, progress_every=0, **kw)


def test_grow_then_shrink_decodes_only_new_videos_and_rewrites_nothing(tmp_path, clips, ray_cluster):
    out, manifest = tmp_path / "out", tmp_path / "m.jsonl"
    first = [row(f"a{i}", clips[i % 4]) for i in range(5)] + [row("t0", clips[0], "test")]
    run_preprocess(options(out, write_manifest(manifest, first)), log=lambda line: None)
    before = stamps(out)
    assert sorted(n for n in os.listdir(out) if n.endswith(".tar")) == [
        "test-000000.tar", "train-000000.tar", "train-000001.tar", "train-000002.tar"]

    # grown by three videos, one of them ("a05") sorting among the old ids
    grown = first + [row("a05", clips[1]), row("b0", clips[2]), row("b1", clips[3])]
    report = run_preprocess(options(out, write_manifest(manifest, grown)), log=lambda line: None)
    assert report.ok and report.processed == 3 and report.resumed == 6
    assert report.shards_written == ["train-000003.tar", "train-000004.tar"]
    assert {n: t for n, t in stamps(out).items() if n in before} == before        # nothing finished was touched
    assert len(os.listdir(out / "_plans")) == 2
    ids = SampleTable.build([str(out)], "train").video_ids()
    assert ids == ["a0", "a1", "a2", "a3", "a4", "a05", "b0", "b1"]              # appended after the last shard

    # two videos leave the corpus: recorded, skipped by readers, nothing rewritten
    after_growth = stamps(out)
    shrunk = [r for r in grown if r["id"] not in ("a1", "b0")]
    report = run_preprocess(options(out, write_manifest(manifest, shrunk)), log=lambda line: None)
    assert report.ok and report.processed == 0 and report.removed == 2
    assert stamps(out) == after_growth
    assert pq.read_table(out / "_removed.parquet").to_pylist() == [{"id": "a1", "split": "train"},
                                                                  {"id": "b0", "split": "train"}]
    assert [item["id"] for item in split_videos([str(out)], "train")] == [
        "a0", "a2", "a3", "a4", "a05", "b1"]
    train = report.summary["splits"]["train"]
    assert (train["samples"], train["removed"]) == (6, 2)

    # the same inputs again: not even the removed table is written again
    removed_stamp = os.stat(out / "_removed.parquet").st_mtime_ns
    again = run_preprocess(options(out, manifest), log=lambda line: None)
    assert again.processed == 0 and os.stat(out / "_removed.parquet").st_mtime_ns == removed_stamp
    assert stamps(out) == after_growth

    # a removed video that comes back is visible again, without decoding
    back = run_preprocess(options(out, write_manifest(manifest, shrunk + [row("a1", clips[1])])),
                          log=lambda line: None)
    assert back.processed == 0 and "a1" in SampleTable.build([str(out)], "train").video_ids()


def test_an_id_that_comes_back_with_another_video_is_refused(tmp_path, clips, ray_cluster):
    out, manifest = tmp_path / "out", tmp_path / "m.jsonl"
    run_preprocess(options(out, write_manifest(manifest, [row("x", clips[0]), row("y", clips[1])])),
                   log=lambda line: None)
    before = stamps(out)
    write_manifest(manifest, [row("x", clips[0]), row("y", clips[2])])
    with pytest.raises(OptionsError, match="video id 'y'") as error:
        run_preprocess(options(out, manifest), log=lambda line: None)
    assert str(clips[2]) in str(error.value) and str(clips[1]) in str(error.value)
    assert stamps(out) == before


def test_changed_options_still_refuse_to_mix_with_finished_shards(tmp_path, clips, ray_cluster):
    out, manifest = tmp_path / "out", write_manifest(tmp_path / "m.jsonl", [row("x", clips[0])])
    run_preprocess(options(out, manifest), log=lambda line: None)
    write_manifest(manifest, [row("x", clips[0]), row("new", clips[1])])
    with pytest.raises(OptionsError, match=r"resolution=32 \(now 48\)"):
        run_preprocess(PreprocessOptions(**{**options(out, manifest).__dict__, "resolution": 48}),
                       log=lambda line: None)


def test_transient_failures_wait_for_retry_failed(tmp_path, ray_cluster):
    """A timeout is transient: a plain re-run leaves it, --retry-failed decodes it again into a new shard."""
    slow = lavfi_video(tmp_path / "slow.mp4", duration=20, fps=30, size=(640, 480), extra=("-preset", "ultrafast"))
    quick = lavfi_video(tmp_path / "quick.mp4", duration=2)
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.jsonl", [row("quick", quick), row("slow", slow)])
    first = run_preprocess(options(out, manifest, timeout=0.001), log=lambda line: None)
    # within 1 ms the quick clip may time out too; the slow one always does
    assert "slow" in {f.id for f in first.failures if f.stage == "timeout"}
    plain = run_preprocess(options(out, manifest), log=lambda line: None)
    assert plain.processed == 0 and {f.id for f in plain.failures} == {f.id for f in first.failures}
    retried = run_preprocess(options(out, manifest, retry_failed=True), log=lambda line: None)
    assert retried.ok and retried.processed == len(first.failures)
    assert retried.shards_written == ["train-000001.tar"]
    assert sorted(SampleTable.build([str(out)], "train").video_ids()) == ["quick", "slow"]
    with open(out / "_failures.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []


def test_a_run_over_some_splits_keeps_what_the_other_splits_removed(tmp_path, clips, ray_cluster):
    out, manifest = tmp_path / "out", tmp_path / "m.jsonl"
    both = [row("a", clips[0]), row("b", clips[1]), row("t", clips[2], "test"), row("u", clips[3], "test")]
    run_preprocess(options(out, write_manifest(manifest, both)), log=lambda line: None)
    run_preprocess(options(out, write_manifest(manifest, both[:3])), log=lambda line: None)       # u leaves
    write_manifest(manifest, both[1:3])                                        # a leaves, seen by a train-only run
    run_preprocess(PreprocessOptions(**{**options(out, manifest).__dict__, "splits": ("train",)}),
                   log=lambda line: None)
    assert pq.read_table(out / "_removed.parquet").to_pylist() == [{"id": "a", "split": "train"},
                                                                  {"id": "u", "split": "test"}]
    assert SampleTable.build([str(out)], "test").video_ids() == ["t"]


def test_an_id_that_moves_to_another_split_is_refused(tmp_path, clips, ray_cluster):
    out, manifest = tmp_path / "out", tmp_path / "m.jsonl"
    run_preprocess(options(out, write_manifest(manifest, [row("x", clips[0])])), log=lambda line: None)
    with pytest.raises(OptionsError, match="video id 'x' is given in split test but is already planned in split "
                                           "train"):
        run_preprocess(options(out, write_manifest(manifest, [row("x", clips[0], "test")])), log=lambda line: None)


def test_inputs_that_are_all_rejected_give_the_failure_table(tmp_path, ray_cluster):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"video": "a.mp4", "id": "a", "captions": [], "split": "train"}])
    report = run_preprocess(options(tmp_path / "out", manifest), log=lambda line: None)
    assert not report.ok and [(f.id, f.stage) for f in report.failures] == [("a", "source")]


def test_a_plan_whose_shards_never_finished_is_made_again_from_the_new_inputs(tmp_path, clips, ray_cluster):
    """Killed after planning, before any shard: the next run may change inputs and options freely."""
    out = tmp_path / "out"
    (out / CATALOG_DIR).mkdir(parents=True)
    (out / CATALOG_DIR / OPTIONS).write_text(json.dumps({"frames": 3}))
    first = collect_inputs(read_manifest(write_manifest(tmp_path / "first.jsonl", [row("x", clips[0])])))
    write_plans(Location.of(str(out)), first, plan_new(first, np.arange(1), 2, {}))
    manifest = write_manifest(tmp_path / "m.jsonl", [row("x", clips[1]), row("y", clips[2])])
    report = run_preprocess(options(out, manifest), log=lambda line: None)
    assert report.ok and report.processed == 2 and os.listdir(out / "_plans") == ["plan-000000.parquet"]
    assert SampleTable.build([str(out)], "train").video_ids() == ["x", "y"]
