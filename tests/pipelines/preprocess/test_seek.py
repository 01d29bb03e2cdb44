"""Seeking to the sampled frames gives the frames of sequential decoding, on real encoded files of every kind
that breaks seeking; every frame shows its own number, read back from the samples."""
import numpy as np
import pytest

import pipelines.preprocess.decode as decode_module
from pipelines.bench.decode import numbered_video, numbers
from pipelines.preprocess.decode import decode_video, decode_windows
from pipelines.preprocess.sampling import DecodeError, Segmenting, windows
from pipelines.storage.location import Location
from tests.fixtures.video_fixtures import run_ffmpeg

SAMPLING = dict(frames=12, resolution=112, timeout=120)


def both_ways(path, fps=1.0):
    sequential = decode_video(str(path), method="sequential", fps=fps, **SAMPLING)
    seeking = decode_video(str(path), method="seek", fps=fps, **SAMPLING)
    return sequential, seeking


def assert_same_frames(path, fps=1.0):
    sequential, seeking = both_ways(path, fps)
    shown = numbers(sequential.frames)
    assert len(shown) == min(12, sequential.available) and shown == sorted(shown) and len(set(shown)) == len(shown)
    assert seeking.method == "seek" and sequential.method == "sequential"
    assert numbers(seeking.frames) == shown
    assert (seeking.available, seeking.timestamps) == (sequential.available, sequential.timestamps)
    assert np.abs(seeking.frames.astype(int) - sequential.frames.astype(int)).mean() < 1.0
    return shown


def encoded(tmp_path, name, seconds=14, fps=15, keyint=10, **video):
    return numbered_video(tmp_path / name, seconds, fps, (192, 144), keyint=keyint, **video)


@pytest.mark.parametrize("fps", [1.0, 2.0, 0.5])
def test_h264_with_b_frames_and_open_gops(tmp_path, fps):
    path = encoded(tmp_path, "open-gop.mp4", extra=("-bf", "3", "-x264-params", "open-gop=1"))
    assert_same_frames(path, fps)


@pytest.mark.parametrize("name,codec", [("vp9.webm", "libvpx-vp9"), ("h264.mkv", "libx264")])
def test_webm_and_mkv(tmp_path, name, codec):
    extra = ("-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k") if codec == "libvpx-vp9" else ()
    assert_same_frames(encoded(tmp_path, name, codec=codec, extra=extra))


def test_a_variable_frame_rate(tmp_path):
    """Frames every 1/15 s for 6 s, then every 1/5 s: picks are found by timestamp, not by frame count."""
    path = encoded(tmp_path, "vfr.mp4", seconds=12, setpts="if(lt(N,90),N/15,6+(N-90)/5)/TB")
    shown = assert_same_frames(path)
    assert max(shown) < 180 - 1      # fewer frames than 12 s at 15 fps: the slow part really is slow


def test_a_stream_whose_first_timestamp_is_not_zero(tmp_path):
    assert_same_frames(encoded(tmp_path, "late.mp4", extra=("-output_ts_offset", "3.3")))


def test_a_rotated_phone_video(tmp_path):
    upright = encoded(tmp_path, "upright.mp4")
    turned = tmp_path / "turned.mp4"
    run_ffmpeg(["-display_rotation", "90", "-i", str(upright), "-c", "copy", str(turned)])
    sequential, seeking = both_ways(turned)
    assert np.array_equal(seeking.frames, sequential.frames)
    assert not np.array_equal(sequential.frames, both_ways(upright)[0].frames)   # turned, as shown


def test_an_edit_list(tmp_path):
    """A cut copied without re-encoding starts between keyframes: the container's edit list hides the frames
    before the cut, which both ways skip."""
    whole = encoded(tmp_path, "whole.mp4")
    cut = tmp_path / "cut.mp4"
    run_ffmpeg(["-ss", "2.4", "-i", str(whole), "-c", "copy", str(cut)])
    shown = assert_same_frames(cut)
    assert shown[0] >= 2.4 * 15


def test_mpeg_ts_has_no_index_and_is_decoded_whole(tmp_path):
    path = encoded(tmp_path, "broadcast.ts")
    with pytest.raises(DecodeError, match="mpegts has no index"):
        decode_video(str(path), method="seek", fps=1.0, **SAMPLING)
    auto = decode_video(str(path), fps=1.0, **SAMPLING)
    assert auto.method == "sequential" and len(auto.frames) == 12


def test_a_truncated_file_is_decoded_whole_and_judged_as_before(tmp_path):
    whole = encoded(tmp_path, "whole.mp4", seconds=30, extra=("-movflags", "+faststart"))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    with pytest.raises(DecodeError) as sequential:
        decode_video(str(cut), method="sequential", fps=1.0, **SAMPLING)
    with pytest.raises(DecodeError) as auto:
        decode_video(str(cut), fps=1.0, **SAMPLING)
    assert str(auto.value) == str(sequential.value) and "truncated" in str(auto.value)


def test_the_cheaper_way_is_taken(tmp_path):
    """Keyframes every 10 s in a 14 s clip: decoding it all is cheaper. Every 0.5 s in 60 s: seeking is."""
    short = decode_video(str(encoded(tmp_path, "short.mp4", keyint=150)), fps=1.0, **SAMPLING)
    long = encoded(tmp_path, "long.mp4", seconds=60, keyint=8)
    chosen = decode_video(str(long), fps=1.0, **SAMPLING)
    assert short.method == "sequential" and chosen.method == "seek"
    assert numbers(chosen.frames) == numbers(decode_video(str(long), method="sequential", fps=1.0, **SAMPLING).frames)


def test_an_object_store_video_is_read_in_ranges_around_the_picks(tmp_path, s3_server, monkeypatch):
    """A large video is read in ranges around the kept frames; a small one in one request, then sought in."""
    local = numbered_video(tmp_path / "long.mp4", 120, 15, (640, 360), keyint=15)
    remote = Location.of(s3_server.prefix("seek")).child("long.mp4")
    remote.put_file(str(local))
    size = local.stat().st_size
    sequential = decode_video(str(local), method="sequential", fps=1.0, **SAMPLING)
    whole = decode_video(remote, fps=1.0, **SAMPLING)
    monkeypatch.setattr(decode_module, "WHOLE_READ_MAX", size // 4)     # as if the video were large
    ranged = decode_video(remote, fps=1.0, **SAMPLING)
    for seeking in (whole, ranged):
        assert seeking.method == "seek" and numbers(seeking.frames) == numbers(sequential.frames)
    assert whole.read_bytes == size == sequential.read_bytes
    assert ranged.read_bytes < 0.5 * size


def test_windows_cover_the_video_and_skip_one_that_adds_nothing():
    assert windows(95, 2.0, None) == [(0, 95)]
    assert windows(95, 2.0, Segmenting(10)) == [(0, 20), (20, 20), (40, 20), (60, 20), (80, 15)]
    assert windows(7, 1.0, Segmenting(10)) == [(0, 7)]                 # shorter than a window: one window
    assert windows(30, 1.0, Segmenting(10, 4)) == [(0, 10), (6, 10), (12, 10), (18, 10), (24, 6)]
    assert windows(28, 1.0, Segmenting(10, 4)) == [(0, 10), (6, 10), (12, 10), (18, 10)]   # 24-28 is inside 18-28


@pytest.mark.parametrize("overlap", [0.0, 4.0])
def test_each_window_holds_frames_from_inside_it_the_same_either_way(tmp_path, overlap):
    path = encoded(tmp_path, "long.mp4", seconds=47, fps=10, keyint=10)
    cut = Segmenting(10, overlap)
    ways = {method: list(decode_windows(str(path), method=method, fps=2.0, segmenting=cut, **SAMPLING))
            for method in ("sequential", "seek")}
    sequential, seeking = ways["sequential"], ways["seek"]
    assert [w.window for w in sequential] == [w.window for w in seeking]
    assert [w.window[0] for w in sequential] == [k * (10 - overlap) for k in range(len(sequential))]
    assert sequential[-1].window[1] == 47.0 and all(w.window[1] - w.window[0] <= 10 for w in sequential)
    for a, b in zip(sequential, seeking):
        shown = numbers(a.frames)
        assert numbers(b.frames) == shown and (a.available, a.timestamps) == (b.available, b.timestamps)
        assert all(a.window[0] - 0.25 <= n / 10 < a.window[1] for n in shown), (a.window, shown)
        assert len(shown) == min(12, a.available)
