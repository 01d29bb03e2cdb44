"""A small synthetic captioned video corpus, made with ffmpeg, for learning checks, the demo and tests.

Each video is a coloured shape sliding across a dark square frame; its captions say the colour, the shape
and the direction of motion ("a red square moving left"), so a model can only match captions to videos
by looking at colour, shape and, across frames, motion. Videos are real H.264 MP4 files of several lengths,
listed in a CSV manifest that `tempme preprocess --manifest` reads:

    from pipelines.demo.synthetic import make_synthetic_corpus
    manifest = make_synthetic_corpus("corpus/", n_videos=32, seed=0)   # -> corpus/manifest.csv

Same arguments, same corpus (attributes, splits and captions are drawn from `seed`).
"""
from __future__ import annotations

import csv
import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.preprocess.media import ffmpeg_exe

COLOURS = {"red": "0xE03030", "green": "0x30C040", "blue": "0x3060E0", "yellow": "0xE0D030"}
SHAPES = {"square": (0.3, 0.3), "bar": (0.45, 0.14)}      # width, height as fractions of the frame side
DIRECTIONS = ("left", "right", "up", "down")
BACKGROUND = "0x202020"
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class SyntheticVideo:
    id: str
    colour: str
    shape: str
    direction: str
    duration: float
    split: str

    @property
    def file(self) -> str:
        return f"{self.id}.mp4"

    @property
    def captions(self) -> list[str]:
        return synthetic_captions(self.colour, self.shape, self.direction)


def synthetic_captions(colour: str, shape: str, direction: str) -> list[str]:
    return [f"a {colour} {shape} moving {direction}",
            f"the {colour} {shape} moves {direction}",
            f"{colour} {shape} going {direction}"]


def plan_corpus(n_videos: int, seed: int = 0, durations: tuple[float, ...] = (4.0, 8.0, 12.0),
                test_fraction: float = 0.25) -> list[SyntheticVideo]:
    """What each video shows, its length and its split; every (colour, shape, direction) once before any
    repeats, and at least one video per split when n_videos >= 2."""
    if n_videos < 1:
        raise ValueError(f"n_videos must be at least 1, got {n_videos}")
    rng = random.Random(seed)
    combos = list(itertools.product(COLOURS, SHAPES, DIRECTIONS))
    rng.shuffle(combos)
    n_test = min(max(round(n_videos * test_fraction), 1 if n_videos >= 2 else 0), n_videos - 1)
    test = set(rng.sample(range(n_videos), n_test))
    return [SyntheticVideo(f"syn{i:04d}", *combos[i % len(combos)], durations[i % len(durations)],
                           "test" if i in test else "train") for i in range(n_videos)]


def make_synthetic_corpus(out_dir: str | Path, n_videos: int = 24, *, seed: int = 0,
                          durations: tuple[float, ...] = (4.0, 8.0, 12.0), side: int = 128, fps: int = 8,
                          test_fraction: float = 0.25, workers: int = 2) -> Path:
    """Write `n_videos` MP4 files and `manifest.csv` (video, id, captions as a JSON list, split, plus the
    colour, shape, direction and duration of each video) into `out_dir`; returns the manifest's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos = plan_corpus(n_videos, seed, durations, test_fraction)
    rng = random.Random(seed + 1)
    lanes = [rng.uniform(0.2, 0.8) for _ in videos]  # where across the motion the shape travels
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda v, lane: render_video(out / v.file, v, side=side, fps=fps, lane=lane), videos, lanes))
    manifest = out / MANIFEST
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "id", "captions", "split", "colour", "shape", "direction", "duration"])
        for v in videos:
            writer.writerow([v.file, v.id, json.dumps(v.captions), v.split, v.colour, v.shape, v.direction, v.duration])
    return manifest


def render_video(path: Path, video: SyntheticVideo, *, side: int, fps: int, lane: float = 0.5) -> None:
    """Encode one video with ffmpeg's lavfi colour sources and an overlay whose position follows time."""

    fw, fh = SHAPES[video.shape]
    w, h = (fh, fw) if video.direction in ("up", "down") else (fw, fh)   # bars travel lengthwise
    w, h = max(2, int(side * w)) // 2 * 2, max(2, int(side * h)) // 2 * 2
    d = video.duration
    along = {"right": f"(W-w)*t/{d}", "left": f"(W-w)*(1-t/{d})",
             "down": f"(H-h)*t/{d}", "up": f"(H-h)*(1-t/{d})"}[video.direction]
    across = f"({side}-{w if video.direction in ('up', 'down') else h})*{lane:.3f}"
    x, y = (along, across) if video.direction in ("left", "right") else (across, along)
    background = ffmpeg.input(f"color=c={BACKGROUND}:s={side}x{side}:r={fps}:d={d}", f="lavfi")
    shape = ffmpeg.input(f"color=c={COLOURS[video.colour]}:s={w}x{h}:r={fps}:d={d}", f="lavfi")
    graph = (ffmpeg.overlay(background, shape, x=x, y=y, shortest=1)
             .output(str(path), vcodec="libx264", pix_fmt="yuv420p", preset="veryfast", movflags="+faststart")
             .global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "1"))
    try:
        graph.run(cmd=ffmpeg_exe(), overwrite_output=True, capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as e:
        raise RuntimeError(f"ffmpeg could not render {path}: {e.stderr.decode(errors='replace')[-500:]}") from None


def make_synthetic_shards(workdir: str | Path, n_videos: int, seed: int = 0, samples_per_shard: int = 4) -> Path:
    """The synthetic corpus made under `workdir/corpus` and preprocessed into `workdir/shards` (benchmarks and
    learning checks start here); uses the running Ray cluster, or starts a local one."""

    workdir = Path(workdir)
    manifest = make_synthetic_corpus(workdir / "corpus", n_videos=n_videos, seed=seed)
    report = run_preprocess(PreprocessOptions(out=str(workdir / "shards"), manifest=str(manifest),
                                              samples_per_shard=samples_per_shard), log=lambda line: None)
    if not report.ok:
        raise RuntimeError(f"preprocessing the synthetic corpus failed: {report.failures}")
    return workdir / "shards"
