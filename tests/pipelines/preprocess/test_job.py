"""The preprocessing job end to end on a real local Ray: good inputs once in the shards, bad ones once in the
failure table, re-runs that redo nothing, and output readable by webdataset, Ray Data and plain tar."""
import csv
import json
import os
import subprocess
import tarfile

import numpy as np
import pyarrow as pa
import pytest
import webdataset as wds

from jobs.cli import main as tempme
from pipelines.preprocess import OptionsError, PreprocessOptions, run_preprocess
from pipelines.preprocess.job import SampleCommits
from pipelines.preprocess.writer import finished_shards
from pipelines.shards.format import SAMPLE_SCHEMA, folder_lease, sample_key, sample_table, write_sample_rows
from pipelines.shards.reader import SampleTable
from pipelines.shards.stream import split_videos
from pipelines.storage.location import Location
from tests.fixtures.video_fixtures import lavfi_video, run_ffmpeg

GOOD_NAMES = ["plain", "with space", "quote's \"double\"", "semi;colon", "ünïcødé 视频", "-leading-dash"]


def make_corpus(root):
    """A JSONL manifest over good videos with awkward names and every kind of bad input."""
    v = root / "videos"
    v.mkdir()
    good = {name: lavfi_video(v / f"{name}.mp4", duration=3) for name in GOOD_NAMES}
    good["one-frame"] = lavfi_video(v / "one.mp4", duration=1, extra=("-frames:v", "1"))
    good["webm"] = lavfi_video(v / "clip.webm", duration=2, codec="libvpx-vp9")
    good["vfr"] = lavfi_video(v / "vfr.mkv", duration=3, fps=30,
                              extra=("-vf", r"select=not(mod(n\,4))+between(n\,30\,45)", "-fps_mode", "vfr"))
    good["large"] = lavfi_video(v / "large.mp4", duration=1, size=(3840, 2160), fps=2, extra=("-preset", "ultrafast"))
    bad = {"missing": v / "missing.mp4", "zero": v / "zero.mp4", "random": v / "random.mp4",
           "audio": v / "audio.m4a", "still": v / "still.mp4", "truncated": v / "truncated.mkv"}
    bad["zero"].write_bytes(b"")
    bad["random"].write_bytes(np.random.default_rng(1).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    run_ffmpeg(["-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(bad["audio"])])
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", "-f", "image2", "-c:v", "png",
             str(bad["still"])])
    whole = lavfi_video(v / "whole.mkv", duration=8, size=(160, 120)).read_bytes()
    bad["truncated"].write_bytes(whole[: len(whole) // 2])
    rows = [{"video": f"videos/{p.name}", "id": name, "captions": [f"video {name}"],
             "split": "test" if name in ("webm", "plain") else "train"} for name, p in good.items()]
    rows += [{"video": f"videos/{p.name}", "id": f"bad-{name}", "captions": ["x"], "split": "train"}
             for name, p in bad.items()]
    rows += [{"video": "videos/plain.mp4", "id": "plain", "captions": ["dup"], "split": "train"},
             {"video": "videos/plain.mp4", "id": "empty-caption", "captions": [""], "split": "train"},
             {"video": "videos/plain.mp4", "id": "number-caption", "captions": [3.5], "split": "train"}]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return manifest, set(good), {f"bad-{n}" for n in bad} | {"plain", "empty-caption", "number-caption"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def shards(corpus, ray_cluster, tmp_path_factory):
    manifest, _, _ = corpus
    out = tmp_path_factory.mktemp("out")
    options = PreprocessOptions(out=str(out), manifest=str(manifest), frames=4, resolution=32,
                                samples_per_shard=3, decoders=2, progress_every=0)
    lines = []
    report = run_preprocess(options, log=lines.append)
    return out, options, report, lines


def tar_samples(out):
    """{id: (tar name, members)} read with plain tarfile; fails on a repeated id."""
    found = {}
    for name in sorted(os.listdir(out)):
        if not name.endswith(".tar"):
            continue
        with tarfile.open(out / name) as tar:
            groups = {}
            for m in tar.getmembers():
                key, suffix = m.name.split(".", 1)
                groups.setdefault(key, {})[suffix] = tar.extractfile(m).read()
        for key, members in groups.items():
            meta = json.loads(members["json"])
            assert meta["id"] not in found, f"{meta['id']} twice"
            assert key == sample_key(meta["id"]) and "." not in key
            found[meta["id"]] = (name, members)
    return found


def test_every_good_input_once_every_bad_input_once(corpus, shards):
    _, good, bad = corpus
    out, _, report, _ = shards
    found = tar_samples(out)
    assert set(found) == good
    with open(out / "_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert sorted(r["id"] for r in failures) == sorted(bad)   # "plain" once: its duplicate row
    stages = {r["id"]: (r["stage"], r["error"]) for r in failures if r["id"] != "plain"}
    assert stages["bad-missing"] == ("input", "missing file")
    assert stages["bad-zero"] == ("input", "empty file (0 bytes)")
    assert stages["bad-audio"][1].startswith("no video stream")
    assert stages["bad-still"][1].startswith("a still image")
    assert "truncated" in stages["bad-truncated"][1]
    assert stages["bad-random"][0] == "decode"
    assert "empty" in stages["empty-caption"][1] and "not text" in stages["number-caption"][1]
    assert not report.ok and len(report.failures) == len(bad)


def test_samples_hold_what_the_format_promises(shards):
    out, _, _, _ = shards
    found = tar_samples(out)
    meta = json.loads(found["large"][1]["json"])
    assert (meta["width"], meta["height"], meta["valid"], meta["frames"]) == (3840, 2160, 1, 4)
    meta = json.loads(found["with space"][1]["json"])
    assert meta["source"].endswith("videos/with space.mp4") and meta["captions"] == ["video with space"]
    assert (meta["valid"], meta["timestamps"], meta["sample_fps"], meta["resolution"]) == (3, [0.0, 1.0, 2.0], 1.0, 32)
    assert sorted(found["with space"][1]) == ["000.jpg", "001.jpg", "002.jpg", "003.jpg", "json"]  # 003: padding
    assert found["webm"][0] == "test-000000.tar"


def test_layout_summary_and_progress(shards):
    out, _, report, lines = shards
    names = sorted(os.listdir(out))
    # train-000001 planned bad-random, bad-still and bad-truncated only: all failed, so it has no tar
    assert [n for n in names if n.endswith(".tar")] == ["test-000000.tar"] + [f"train-{i:06d}.tar" for i in (0, 2, 3,
                                                                                                             4)]
    assert not [n for n in names + os.listdir(out / "_index") if ".partial-" in n]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["splits"]["test"]["samples"] == 2 and summary["splits"]["train"]["samples"] == 8
    assert summary["splits"]["train"]["shards"] == 4 and summary["failures"] == len(report.failures)
    assert summary["splits"]["train"]["bytes"] == sum(os.path.getsize(out / n) for n in names if n.startswith("train"))
    progress = [line for line in lines if "videos done" in line]
    assert len(progress) == len(report.shards_written) == 6          # a line per finished shard
    done = [int(line.split()[1].split("/")[0]) for line in progress]
    assert done == sorted(done) and progress[-1].startswith("preprocess: 16/16 videos done, 6 failed, ")
    assert progress[-1].endswith(" videos/s, ETA 0:00")                 # the rate, and no time left
    assert any(line.startswith("preprocess: finished in") and "decoded 16 videos" in line for line in lines)
    assert any(line.strip().startswith("train: 8 videos in 4 shards") for line in lines)


def test_plain_tar_lists_the_shards(shards):
    out, _, _, _ = shards
    listing = subprocess.run(["tar", "tf", str(out / "test-000000.tar")], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == [f"{key}.{suffix}" for key in ("plain", "webm")
                                      for suffix in ["json"] + [f"{i:03d}.jpg" for i in range(4)]]


def test_webdataset_and_ray_data_read_the_folder(shards, ray_cluster):

    out, _, _, _ = shards
    urls = sorted(str(out / n) for n in os.listdir(out) if n.startswith("train-"))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb"))
    assert len(samples) == 8 and all(s["003.jpg"].shape == (32, 32, 3) for s in samples)
    rows = ray_cluster.data.read_webdataset(str(out)).take_all()      # the bare folder: the tables are skipped
    assert sorted(r["json"]["id"] for r in rows) == sorted(tar_samples(out))
    one_frame = next(r for r in rows if r["json"]["id"] == "one-frame")
    assert one_frame["json"]["valid"] == 1 and one_frame["001.jpg"].max() < 20   # padding is black


def test_rerun_redoes_nothing_and_completes_what_is_missing(shards, corpus):
    out, options, first, _ = shards
    stamps = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.endswith(".tar")}
    again = run_preprocess(options, log=lambda line: None)
    assert again.processed == 0 and again.resumed == 10 + 6  # every planned video, bad files included
    assert {n: os.stat(out / n).st_mtime_ns for n in stamps} == stamps
    assert again.summary == first.summary
    sample_table(Location.of(out)).delete("shard = 'train-000002.tar'")   # as if killed before it finished
    redo = run_preprocess(options, log=lambda line: None)
    assert redo.processed == 3 and redo.shards_written == ["train-000002.tar"]
    assert os.stat(out / "train-000003.tar").st_mtime_ns == stamps["train-000003.tar"]
    assert set(tar_samples(out)) == corpus[1]


def test_resume_refuses_other_options(shards):
    out, options, _, _ = shards
    with pytest.raises(OptionsError, match=r"frames=4 \(now 8\)"):
        run_preprocess(PreprocessOptions(**{**options.__dict__, "frames": 8}), log=lambda line: None)


def test_options_of_a_run_that_finished_no_shard_can_change(corpus, tmp_path, ray_cluster):
    manifest = tmp_path / "one.jsonl"
    video = corpus[0].parent / "videos" / "plain.mp4"
    manifest.write_text(json.dumps({"video": str(video), "id": "v", "captions": ["c"], "split": "train"}) + "\n")
    out = tmp_path / "out"
    (out / "_index").mkdir(parents=True)
    (out / "_index" / "options.json").write_text(json.dumps({"frames": 4}))   # a run stopped before any shard
    report = run_preprocess(PreprocessOptions(out=str(out), manifest=str(manifest), frames=3), log=lambda line: None)
    assert report.ok and report.summary["options"]["frames"] == 3
    assert json.loads((out / "_index" / "options.json").read_text())["frames"] == 3


@pytest.mark.parametrize("argv,message", [
    (["--frames", "0"], "--frames must be an integer from 1"),
    (["--splits", "train,dev"], "unknown split 'dev'"),
    (["--splits", "val"], "split 'val' has no videos"),
    (["--fps", "0"], "--fps must be above 0"),
])
def test_bad_options_fail_before_any_work(corpus, tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert tempme(["preprocess", "--manifest", str(corpus[0]), "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_empty_manifest_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("video,id,captions,split\n")
    assert tempme(["preprocess", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "lists no videos" in capsys.readouterr().err


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert tempme(["preprocess", "--msrvtt", str(tmp_path / "nope"), "--videos", str(tmp_path),
                   "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_msrvtt_layout_through_the_command(tmp_path, ray_cluster):
    ann, videos = tmp_path / "msrvtt", tmp_path / "msrvtt" / "videos"
    videos.mkdir(parents=True)
    for vid in ("video0", "video1", "video7010"):
        lavfi_video(videos / f"{vid}.mp4", duration=2)
    sentences = [{"video_id": v, "caption": f"{v} caption {i}", "sen_id": i} for v in ("video0",
                                                                                       "video1") for i in range(3)]
    (ann / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    (ann / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\n")
    (ann / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr7010,video7010,a test\n")
    out = tmp_path / "shards"
    status = tempme(["preprocess", "--msrvtt", str(ann), "--videos", str(videos), "--out", str(out),
                     "--frames", "2", "--resolution", "32", "--decoders", "2"])
    assert status == 0
    test = list(split_videos([str(out)], "test"))
    assert [(t["id"], t["captions"]) for t in test] == [("video7010", ["a test"])]
    assert SampleTable.build([str(out)], "train").pairs == 6


def test_finished_shards_are_committed_in_batches_the_first_at_once(tmp_path):
    out = Location.of(str(tmp_path))

    def shard(n: int) -> tuple[str, ...]:
        row = {f.name: 0 if pa.types.is_integer(f.type) else "" if pa.types.is_string(f.type) else None
               for f in SAMPLE_SCHEMA}
        return tuple(write_sample_rows(out, pa.Table.from_pylist(
            [{**row, "id": f"v{n}", "split": "train", "shard": f"train-{n:06d}.tar"}], schema=SAMPLE_SCHEMA)))

    lease = folder_lease(out, "test", "preprocess run")
    lease.acquire()
    commits = SampleCommits(out, lease, shards=3, seconds=3600)
    commits.add("train-000000.tar", shard(0))
    assert finished_shards(out) == {"train-000000.tar"}                 # the first shard at once
    commits.add("train-000001.tar", shard(1))
    commits.add("train-000002.tar", shard(2))
    assert len(finished_shards(out)) == 1 and sample_table(out).version == 1   # then in batches ...
    commits.add("train-000003.tar", shard(3))
    assert len(finished_shards(out)) == 4 and sample_table(out).version == 2   # ... of 3, one version each
    other = SampleCommits(out, lease, shards=1)        # a run that made shards 3 and 4 too (a lease taken over)
    other.add("train-000003.tar", shard(3))
    other.add("train-000004.tar", shard(4))
    commits.add("train-000004.tar", shard(4))
    commits.flush()
    ids = sample_table(out).to_table(columns=["id"])["id"].to_pylist()
    assert sorted(ids) == [f"v{n}" for n in range(5)]                    # each shard's rows once
    lease.release()
