"""The sample table's readers: frame content survives the round trip, a sample reads back by its byte span, bad
shards are named (or skipped and counted), several folders read as one split, removed videos are left out, a
folder of the catalog era is refused until converted and then reads the same."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.preprocess.upgrade import upgrade_folder
from pipelines.shards.format import CATALOG_DIR, REMOVED, REMOVED_SCHEMA, SAMPLES, sample_table
from pipelines.shards.frames import normalise
from pipelines.shards.reader import (
    BadShards,
    LegacyShards,
    SampleReader,
    SampleTable,
    SplitCount,
    read_summary,
    sample_batches,
    shard_folders,
)
from pipelines.shards.stream import split_videos
from pipelines.storage.location import Location
from tempme import CLIP_MEAN, CLIP_STD
from tests.fixtures.video_fixtures import encode_frames, gray_level, gray_steps


def pixels(video):
    """Normalised [T,3,H,W] back to 0-255 RGB."""
    return video * torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255 + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255


@pytest.fixture(scope="module")
def pattern_shards(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("patterns")
    red = np.zeros((30, 48, 64, 3), np.uint8)
    red[..., 0] = 255
    encode_frames(root / "red.mp4", red, fps=10)                       # 3 s of pure red
    encode_frames(root / "steps.mp4", gray_steps(20, fps=5), fps=5)    # grey level = the second
    rows = [{"video": "red.mp4", "id": "red", "captions": ["a red screen"], "split": "train"},
            {"video": "steps.mp4", "id": "steps", "captions": ["grey steps", "counting up"], "split": "train"}]
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "shards"
    report = run_preprocess(PreprocessOptions(out=str(out), manifest=str(root / "m.jsonl"), resolution=64,
                                              quality=95, decoders=2), log=lambda line: None)
    assert report.ok
    return out


def test_round_trip_keeps_colour_sampling_and_mask(pattern_shards):
    items = {it["id"]: it for it in split_videos([str(pattern_shards)], "train")}
    red = items["red"]
    assert red["video"].shape == (12, 3, 64, 64) and red["video"].dtype == torch.uint8
    assert red["mask"].tolist() == [True] * 3 + [False] * 9
    video = normalise(red["video"], red["mask"])
    rgb = pixels(video[:3]).mean(dim=(0, 2, 3))
    assert rgb[0] > 235 and rgb[1] < 20 and rgb[2] < 20
    assert torch.all(video[3:] == 0)                                   # padding: zeros after normalisation
    steps = items["steps"]
    assert steps["mask"].all() and steps["captions"] == ["grey steps", "counting up"]
    seconds = np.linspace(0, 19, 12, dtype=int)
    np.testing.assert_allclose(steps["video"].float().mean(dim=(1, 2, 3)).numpy(),
                               [gray_level(s) for s in seconds], atol=3)


def test_a_sample_reads_back_by_its_span(pattern_shards):
    table = SampleTable.build([str(pattern_shards)], "train")
    row = table.ids.to_pylist().index("steps")
    reader = SampleReader()
    meta, jpegs = reader.read(table.tars[table.shard[row]], table.start[row], table.end[row])
    reader.close()
    assert meta["id"] == "steps" and meta["valid"] == len(jpegs) == 12
    assert all(j[:2] == b"\xff\xd8" for j in jpegs)                   # JPEGs, padding not included


def test_a_batch_of_samples_is_read_one_request_per_run_of_neighbours(synthetic_shards):
    table = SampleTable.build([str(synthetic_shards)], "train")
    rows = list(np.random.default_rng(0).permutation(len(table.start)))      # the order a batch asks in
    tars, starts, ends = [table.tars[table.shard[r]] for r in rows], table.start[rows], table.end[rows]
    reader = SampleReader()
    alone = [reader.read(t, s, e) for t, s, e in zip(tars, starts, ends)]
    reader.requests = 0
    together = reader.read_many(tars, starts, ends)
    assert together == alone and reader.requests == len(table.tars)          # each tar's samples in one request
    broken = list(ends)
    broken[0] = starts[0] + 100                  # a sample cut short: only it fails, its neighbours read on
    mixed = reader.read_many(tars, starts, broken)
    reader.close()
    assert isinstance(mixed[0], Exception) and mixed[1:] == alone[1:]


def test_the_table_is_columns_in_shard_order(synthetic_shards):
    table = SampleTable.build([str(synthetic_shards)], "train")
    rows_read = sorted((r for _, b in sample_batches([str(synthetic_shards)], ["id", "shard", "start"], "train")
                        for r in b.to_pylist()), key=lambda r: (r["shard"], r["start"]))
    in_tar_order = table.rows(np.arange(len(table.tars)))
    assert table.ids.take(in_tar_order).to_pylist() == [r["id"] for r in rows_read] and table.pairs == 12 * 3
    assert table.start.dtype == np.int64 and table.captions.dtype == np.int32
    rows = table.rows(np.arange(len(table.tars)))
    assert [table.tars[i].rsplit("/", 1)[1] for i in table.shard[rows]] == [r["shard"] for r in rows_read]
    assert list(table.count) == [4, 4, 4]


def test_clear_errors(synthetic_shards):
    with pytest.raises(FileNotFoundError, match="no finished shards of split 'val'"):
        SampleTable.build([str(synthetic_shards)], "val")
    with pytest.raises(ValueError, match="bad_shards must be one of"):
        SampleTable.build([str(synthetic_shards)], "train", bad_shards="ignore")
    for count in (SplitCount.count, lambda *a: SampleTable.build(*a)):
        with pytest.raises(FileNotFoundError, match="no finished shards of split 'val'"):
            count([str(synthetic_shards)], "val")
        with pytest.raises(ValueError, match="bad_shards must be one of"):
            count([str(synthetic_shards)], "train", "ignore")
    assert SplitCount.count([str(synthetic_shards)], "train") == SplitCount(videos=12, pairs=36, tars=3)
    assert [p.rsplit("/", 1)[1] for p in SampleTable.build([str(synthetic_shards)], "train").tars] == \
        ["train-000000.tar", "train-000001.tar", "train-000002.tar"]


def test_missing_and_truncated_shards_are_listed_or_skipped(synthetic_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(synthetic_shards, copy)
    (copy / "train-000000.tar").unlink()
    with open(copy / "train-000001.tar", "r+b") as f:
        f.truncate(1000)
    for count in (SampleTable.build, SplitCount.count):     # the driver's count checks as the workers' table
        with pytest.raises(BadShards) as told:
            count([str(copy)], "train")
        message = str(told.value)
        assert "2 bad shards of split 'train'" in message and "train-000000.tar: missing" in message
        assert "train-000001.tar: truncated (1000 of" in message and "data.bad_shards=skip" in message
    table = SampleTable.build([str(copy)], "train", bad_shards="skip")
    assert len(table) == 4 and len(table.skipped) == 2                  # the one good shard, two counted
    assert SplitCount.count([str(copy)], "train", "skip") == SplitCount(4, table.pairs, 1, table.skipped)
    assert SampleTable.build([str(copy)], "test").video_ids() == \
        SampleTable.build([str(synthetic_shards)], "test").video_ids()    # other splits are untouched


def test_several_folders_read_as_one_split(synthetic_shards, pattern_shards):
    both = shard_folders(f"{synthetic_shards},{pattern_shards}")
    assert both == (str(synthetic_shards), str(pattern_shards))
    table = SampleTable.build(both, "train")
    assert len(table) == 12 + 2 and table.video_ids()[-2:] == ["red", "steps"]
    assert read_summary(both) == read_summary([str(synthetic_shards)])
    with pytest.raises(TypeError, match="not the text"):
        SampleTable.build(str(synthetic_shards), "train")     # a text is parsed where it comes in, not here
    assert SplitCount.count(both, "train") == SplitCount(videos=14, pairs=table.pairs, tars=len(table.tars))
    for count in (SampleTable.build, SplitCount.count):
        with pytest.raises(ValueError, match="is in more than one shard folder"):
            count(shard_folders(f"{synthetic_shards}, {synthetic_shards}"), "train")


def test_removed_videos_are_an_anti_join(synthetic_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(synthetic_shards, copy)
    before = SampleTable.build([str(copy)], "train").video_ids()
    pq.write_table(pa.table({"id": before[:2], "split": ["train"] * 2}, schema=REMOVED_SCHEMA), copy / REMOVED)
    assert SampleTable.build([str(copy)], "train").video_ids() == before[2:]
    assert SplitCount.count([str(copy)], "train").videos == len(before) - 2


def legacy_copy(shards, folder):
    """`shards` as the preprocessing job before the sample table left it: a JSON catalog per shard."""
    shutil.copytree(shards, folder, ignore=shutil.ignore_patterns(SAMPLES))
    rows = sample_table(Location.of(shards)).to_table().to_pylist()
    for shard in {r["shard"] for r in rows}:
        mine = [r for r in rows if r["shard"] == shard]
        catalog = {"format": "tempme-shards/1", "shard": shard, "split": mine[0]["split"],
                   "bytes": (folder / shard).stat().st_size, "frames": sum(r["valid"] for r in mine),
                   "planned": [r["id"] for r in mine],
                   "samples": [{"key": r["key"], "id": r["id"], "captions": r["captions"], "valid": r["valid"],
                                "span": [r["start"], r["end"]], "members": {
                                    "000.jpg": [r["thumb_offset"], r["thumb_size"]]}} for r in mine if not r["error"]],
                   "failures": [{"input": r["source"], "id": r["id"], "split": r["split"], "stage": r["stage"],
                                 "error": r["error"]} for r in mine if r["error"]]}
        (folder / CATALOG_DIR / shard.replace(".tar", ".json")).write_text(json.dumps(catalog))


def test_a_folder_of_the_catalog_era_is_refused_then_converted_once(synthetic_shards, tmp_path):
    old = tmp_path / "old"
    legacy_copy(synthetic_shards, old)
    with pytest.raises(LegacyShards, match=f"tempme upgrade-shards {old}"):
        SampleTable.build([str(old)], "train")
    catalogs = len(list((old / CATALOG_DIR).glob("*-*.json")))
    assert catalogs == 4 and upgrade_folder(Location.of(old)) == catalogs and upgrade_folder(Location.of(old)) == 0
    for split in ("train", "test"):
        now, then = SampleTable.build([str(old)], split), SampleTable.build([str(synthetic_shards)], split)
        assert now.video_ids() == then.video_ids() and sorted(now.start) == sorted(then.start)
