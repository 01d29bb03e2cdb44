"""URIs instead of local paths: inputs read and shards written and read through pyarrow filesystems."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import boto3
import numpy as np
import pytest
import torch

from pipelines.preprocess import OptionsError, PreprocessOptions, run_preprocess
from pipelines.preprocess.plan import ShardPlan
from pipelines.preprocess.sample import DecodeSettings, make_sample
from pipelines.preprocess.sources import VideoInput
from pipelines.preprocess.writer import finished_shards, write_shard
from pipelines.shards.format import sample_table
from pipelines.shards.reader import read_summary
from pipelines.shards.stream import split_videos
from pipelines.storage.location import Location
from tests.fixtures.video_fixtures import encode_frames, lavfi_video


def test_decode_write_and_read_on_an_object_store(tmp_path, s3_server):
    """A real S3 server: videos are fetched for ffmpeg, shards written and read back by byte range."""
    bucket = s3_server.prefix("object-store")
    green = np.zeros((20, 32, 32, 3), np.uint8)
    green[..., 1] = 255
    video = Location.of(f"{bucket}/videos/a green clip.mp4")
    video.parent().make_dirs()
    video.write_atomic(encode_frames(tmp_path / "g.mp4", green, fps=10).read_bytes())
    inputs = [VideoInput("green", video.uri, ("all green",), "train", "test"),
              VideoInput("gone", f"{bucket}/videos/missing.mp4", ("x",), "train", "test")]
    plan = ShardPlan("train", "train-000000.tar", tuple(inputs))
    settings = DecodeSettings(frames=4, fps=1.0, resolution=32, quality=95, timeout=60)
    rows = [make_sample({"shard": plan.name, "pos": i, "id": v.id, "uri": v.uri, "captions": list(v.captions),
                         "split": v.split, "origin": v.origin}, settings) for i, v in enumerate(plan.videos)]
    out = Location.of(f"{bucket}/shards")
    counts = write_shard(out, plan, rows)
    assert (counts["samples"], counts["failures"]) == (1, 1)
    assert finished_shards(out) == {"train-000000.tar"}
    failed = sample_table(out).to_table(filter="error != ''").to_pylist()
    assert [(f["id"], f["error"]) for f in failed] == [("gone", "missing file")]
    item, = split_videos([out.uri], "train")
    assert item["id"] == "green" and item["mask"].tolist() == [True, True, False, False]
    assert item["video"][:2, 1].float().mean() > 230 and item["video"][:2, 0].float().mean() < 25   # green survives
    assert not [loc for loc in out.list() if ".partial-" in loc.name]


def test_job_with_file_uris_and_spaces(tmp_path, ray_cluster):
    folder = tmp_path / "a folder"
    folder.mkdir()
    lavfi_video(folder / "clip one.mp4", duration=2)
    (folder / "m.jsonl").write_text(json.dumps({"video": "clip one.mp4", "id": "one", "captions": ["c"],
                                                "split": "train"}) + "\n")
    uri = "file://" + quote(str(folder))
    report = run_preprocess(PreprocessOptions(out=f"{uri}/shards out", manifest=f"{uri}/m.jsonl", frames=2,
                                              resolution=32, decoders=1), log=lambda line: None)
    assert report.ok and (folder / "shards out" / "train-000000.tar").exists()
    assert read_summary([str(folder / "shards out")])["splits"]["train"]["samples"] == 1
    assert isinstance(next(split_videos([f"{uri}/shards out"], "train"))["video"], torch.Tensor)


def test_a_missing_bucket_or_refused_credentials_stop_the_job_before_any_decoding(tmp_path, s3_server,
                                                                                 monkeypatch):
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": str(tmp_path / "v.mp4"), "id": "v", "captions": ["c"],
                                                  "split": "train"}) + "\n")
    options = PreprocessOptions(out="s3://no-such-bucket-here/shards", manifest=str(tmp_path / "m.jsonl"))
    with pytest.raises(OptionsError, match=r"--out s3://no-such-bucket-here/shards: bucket 'no-such-bucket-here' "
                                           r"does not exist"):
        run_preprocess(options, log=lambda line: None)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(OptionsError, match=r"--out s3://.*: the object store refused or did not answer.*"
                                           r"AWS_ACCESS_KEY_ID"):
        run_preprocess(PreprocessOptions(out=s3_server.prefix("refused"), manifest=options.manifest),
                       log=lambda line: None)


def test_videos_in_a_missing_bucket_are_one_clear_error(tmp_path, s3_server):
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "s3://no-such-videos/a.mp4", "id": "a", "captions": ["c"],
                                                  "split": "train"}) + "\n")
    with pytest.raises(OptionsError, match=r"video 'a' \(m.jsonl line 1\): s3://no-such-videos/a.mp4: bucket "
                                           r"'no-such-videos' does not exist"):
        run_preprocess(PreprocessOptions(out=str(tmp_path / "out"), manifest=str(tmp_path / "m.jsonl")),
                       log=lambda line: None)
    assert not (tmp_path / "out").exists()


# A process killed in the middle of an upload: its multipart upload is open, nothing is under the final name.
CUT = textwrap.dedent("""
    import os, signal, sys
    from pipelines.storage.location import Location
    loc = Location.of(sys.argv[1])
    stream = loc.fs.open_output_stream(loc.path)
    stream.write(b"x" * (24 << 20))
    stream.flush()
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _uploads(out: str) -> list[str]:
    bucket, _, prefix = out.removeprefix("s3://").partition("/")
    return [u["Key"] for u in boto3.client("s3").list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/")
            .get("Uploads", [])]


def test_an_upload_cut_by_a_kill_is_aborted_by_the_next_run(tmp_path, s3_server, ray_cluster):
    out = s3_server.prefix("cut")
    cut = f"{out}/train-000000.tar"
    root = Path(__file__).resolve().parents[3]
    killed = subprocess.run([sys.executable, "-c", CUT, cut], capture_output=True, text=True, timeout=120, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert killed.returncode == -9 and "written" in killed.stdout, killed.stderr[-2000:]
    assert _uploads(out) == [cut.removeprefix(f"s3://{s3_server.bucket}/")] and not Location.of(cut).exists()

    (tmp_path / "m.jsonl").write_text(json.dumps({"video": str(lavfi_video(tmp_path / "a.mp4", duration=2)),
                                                  "id": "a", "captions": ["c"], "split": "train"}) + "\n")
    said = []
    report = run_preprocess(PreprocessOptions(out=out, manifest=str(tmp_path / "m.jsonl"), frames=2, resolution=32,
                                              decoders=1, progress_every=0), log=said.append)
    assert report.ok and _uploads(out) == []          # aborted, not completed: the tar holds the new shard only
    assert any("removed 1 unfinished files and uploads" in line for line in said), said
    assert read_summary([out])["splits"]["train"]["samples"] == 1
