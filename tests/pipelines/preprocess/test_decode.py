"""Decoding real encoded files with ffmpeg: codecs, containers, lengths, sizes, and every kind of bad file."""
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipelines.preprocess.decode import decode_video
from pipelines.preprocess.sample import DecodeSettings, make_sample
from pipelines.preprocess.sampling import DecodeError, sample_indices
from pipelines.preprocess.sequential import FrameKeeper, decode_sequential
from tests.fixtures.video_fixtures import encode_frames, gray_level, gray_steps, lavfi_video, run_ffmpeg


def decode(path, frames=12, resolution=32):
    return decode_video(str(path), frames=frames, fps=1.0, resolution=resolution, timeout=60)


def test_sample_indices_spread_uniformly_or_keep_all():
    assert sample_indices(20, 12) == [0, 1, 3, 5, 6, 8, 10, 12, 13, 15, 17, 19]
    assert sample_indices(5, 12) == [0, 1, 2, 3, 4]
    assert sample_indices(12, 12) == list(range(12))


@pytest.mark.parametrize("name,codec,expected", [("h264.mp4", "libx264", "h264"), ("hevc.mkv", "libx265", "hevc"),
                                                 ("vp9.webm", "libvpx-vp9", "vp9"), ("mpeg4.avi", "mpeg4", "mpeg4")])
def test_codecs_and_containers(tmp_path, name, codec, expected):
    path = lavfi_video(tmp_path / name, duration=3, codec=codec)
    video = decode(path)
    assert video.frames.shape == (3, 32, 32, 3) and video.frames.dtype == np.uint8
    assert video.timestamps == (0.0, 1.0, 2.0)
    assert video.info.codec == expected and (video.info.width, video.info.height) == (64, 48)
    assert video.duration == pytest.approx(3.0, abs=0.15) and video.info.fps == pytest.approx(10)


def test_sampled_frames_are_the_right_seconds(tmp_path):
    """20 s at 1 fps -> 20 frames -> 12 spread uniformly; each frame's grey level tells its second."""
    path = encode_frames(tmp_path / "steps.mp4", gray_steps(20, fps=5), fps=5)
    video = decode(path)
    picks = sample_indices(20, 12)
    assert video.available == 20 and video.timestamps == tuple(float(i) for i in picks)
    levels = video.frames.reshape(12, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [gray_level(s) for s in picks], atol=3)


def test_scale_short_side_then_centre_crop(tmp_path):
    frame = np.zeros((90, 160, 3), np.uint8)          # black side bars, white centre square 90x90
    frame[:, 35:125] = 255
    video = decode(encode_frames(tmp_path / "wide.mp4", np.stack([frame] * 10), fps=10), resolution=30)
    assert video.frames.shape == (1, 30, 30, 3)
    assert video.frames.mean() > 235                   # only the centre square survives the crop


@pytest.mark.parametrize("case", ["sub-second", "one frame", "portrait odd size", "variable frame rate"])
def test_unusual_but_good_videos(tmp_path, case):
    path = tmp_path / "v.mp4"
    if case == "sub-second":
        lavfi_video(path, duration=0.3)
    elif case == "one frame":
        lavfi_video(path, duration=1, extra=("-frames:v", "1"))
    elif case == "portrait odd size":
        lavfi_video(path, duration=2, size=(51, 91), extra=("-vf", "scale=51:91"), codec="mpeg4")
    else:
        lavfi_video(path, duration=4, fps=30, extra=("-vf", r"select=not(mod(n\,4))+between(n\,30\,60)",
                                                        "-fps_mode", "vfr"))
    video = decode(path)
    expected = {"sub-second": 1, "one frame": 1, "portrait odd size": 2, "variable frame rate": 4}[case]
    assert video.frames.shape == (expected, 32, 32, 3)
    assert video.timestamps == tuple(float(i) for i in range(expected))


def test_very_large_resolution(tmp_path):
    path = lavfi_video(tmp_path / "4k.mp4", duration=1, size=(3840, 2160), fps=2, extra=("-preset", "ultrafast"))
    video = decode(path, resolution=64)
    assert video.frames.shape == (1, 64, 64, 3) and (video.info.width, video.info.height) == (3840, 2160)


def truncated(tmp_path, name, **kw):
    whole = lavfi_video(tmp_path / f"whole-{name}", duration=10, size=(160, 120), **kw)
    data = whole.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    return tmp_path / name


@pytest.mark.parametrize("case,reason", [
    ("random bytes", "not an MP4"),
    ("truncated mp4", "no moov atom"),
    ("truncated faststart mp4", "truncated or corrupt: frames stop at"),
    ("truncated mkv", "truncated or corrupt: frames stop at"),
    ("audio only", "no video stream"),
    ("still image", "a still image (png picture)"),
    ("text file", "not a readable video"),
])
def test_bad_files_say_why(tmp_path, case, reason):
    path = tmp_path / "bad.mp4"
    if case == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    elif case == "truncated mp4":
        path = truncated(tmp_path, "t.mp4")
    elif case == "truncated faststart mp4":
        path = truncated(tmp_path, "t.mp4", extra=("-movflags", "+faststart"))
    elif case == "truncated mkv":
        path = truncated(tmp_path, "t.mkv")
    elif case == "audio only":
        run_ffmpeg(["-f", "lavfi", "-i", "sine=d=2", "-c:a", "aac", str(path)])
    elif case == "still image":
        Image.new("RGB", (40, 30), "red").save(path, format="PNG")   # a PNG named .mp4
    else:
        path = tmp_path / "notes.mkv"
        path.write_text("hello, I am not a video\n" * 50)
    with pytest.raises(DecodeError) as info:
        decode(path)
    assert reason in str(info.value)


SETTINGS = DecodeSettings(frames=4, fps=1.0, resolution=32, quality=90, timeout=60)


def row(path, vid="v"):
    return {"shard": "train-000000.tar", "pos": 0, "id": vid, "uri": str(path), "captions": ["a cap"],
            "split": "train", "origin": "test"}


@pytest.mark.parametrize("case,stage,reason", [("missing", "input", "missing file"),
                                               ("zero bytes", "input", "empty file (0 bytes)"),
                                               ("folder", "input", "a folder"),
                                               ("random", "decode", "not an MP4")])
def test_make_sample_turns_every_problem_into_a_failure_row(tmp_path, case, stage, reason):
    path = tmp_path / "x.mp4"
    if case == "zero bytes":
        path.write_bytes(b"")
    elif case == "folder":
        path.mkdir()
    elif case == "random":
        path.write_bytes(b"\x00\x01garbage" * 999)
    out = make_sample(row(path), SETTINGS)
    assert (out["stage"], out["samples"]) == (stage, [])
    assert reason in out["error"]


def test_make_sample_fragment_is_valid_tar_with_exact_offsets(tmp_path):
    path = lavfi_video(tmp_path / "it's; a \"name\" -é.mp4", duration=6)
    out = make_sample(row(path, vid="it's a.id"), SETTINGS)
    sample, = out["samples"]
    assert out["error"] == "" and sample["valid"] == 4 and "." not in sample["key"]
    members = json.loads(sample["members"])
    with tarfile.open(fileobj=io.BytesIO(sample["fragment"] + b"\0" * 1024)) as tar:
        names = tar.getnames()
        assert names == [f"{sample['key']}.json"] + [f"{sample['key']}.{i:03d}.jpg" for i in range(4)]
        for m in tar.getmembers():
            offset, size = members[m.name.split(".", 1)[1]]
            assert (m.offset_data, m.size) == (offset, size)
        meta = json.load(tar.extractfile(names[0]))
    assert meta["id"] == "it's a.id" and meta["captions"] == ["a cap"] and meta["source"] == str(path)
    assert (meta["frames"], meta["valid"], meta["timestamps"]) == (4, 4, [0.0, 1.0, 3.0, 5.0])


@pytest.mark.parametrize("duration,fps,rate", [(3, 25, 1.0), (47, 10, 1.0), (20, 30, 4.0), (9, 24, 0.5)])
def test_bounded_buffer_picks_the_same_frames_as_keeping_all(tmp_path, duration, fps, rate):
    """Streaming keeps a few frames (here at most 2 besides the likely picks), yet picks exactly the frames
    that keeping every frame picks, for videos much longer than the buffer."""
    path = lavfi_video(tmp_path / "long.mp4", duration=duration, fps=fps, size=(64, 48))
    kwargs = dict(frames=6, fps=rate, resolution=32, timeout=60)
    everything, = decode_sequential(str(path), max_buffered=None, **kwargs)
    bounded, = decode_sequential(str(path), max_buffered=2, **kwargs)
    assert everything.available > 2     # more frames than the buffer holds besides the likely picks
    assert bounded.available == everything.available and bounded.timestamps == everything.timestamps
    assert np.array_equal(bounded.frames, everything.frames)


def test_frame_keeper_memory_stays_bounded_and_falls_back_to_the_nearest_frame():
    """With no usable duration (None) and a long stream, the keeper holds at most its cap and still gives
    `frames` frames, each the kept one nearest to the exact pick."""
    keeper = FrameKeeper(frames=4, expected=None, max_buffered=8)
    most = 0
    for i in range(1000):
        keeper.offer(np.full((2, 2, 3), i % 256, np.uint8))
        most = max(most, len(keeper.kept))
    picks, frames = keeper.pick()
    assert most <= 9 and keeper.available == 1000 and picks == sample_indices(1000, 4)
    kept = sorted(keeper.kept)
    assert [int(f[0, 0, 0]) for f in frames] == [min(kept, key=lambda k: abs(k - p)) % 256 for p in picks]


def test_a_video_slower_than_the_timeout_is_a_timeout_failure(tmp_path):
    path = lavfi_video(tmp_path / "slow.mp4", duration=20, fps=30, size=(640, 480), extra=("-preset", "ultrafast"))
    out = make_sample(row(path), DecodeSettings(frames=4, fps=30.0, resolution=256, quality=90, timeout=0.05))
    assert out["stage"] == "timeout" and "longer than 0.05 s" in out["error"]
