"""Finding the right moment of a long video: long videos joined from pieces of the demo's moving shapes, each
piece's caption searched against the library embedded whole and cut into windows of several lengths.

The model is trained by the demo's recipe on its short clips only (or given with --model); nothing here is
tuned on the long videos. Every piece shows another (colour, shape, direction), so each caption names one
piece of one video. A piece is found at rank r when the r-th best window (over all videos) is of its video and
overlaps it; a whole video (one sample per long video) can only name the video. Chance is a window drawn at
random. Cost: the preprocessing and embedding seconds per hour of video for each way of cutting.
"""
from __future__ import annotations

import argparse
import itertools
import math
import random
import subprocess
import time
from pathlib import Path

from pipelines.bench import common
from pipelines.demo.synthetic import COLOURS, DIRECTIONS, SHAPES, SyntheticVideo, render_video
from pipelines.embed import EmbedOptions, TextSearch, embed_corpus
from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.preprocess.media import ffmpeg_exe

WORKDIR = "the demo model, the long videos, the shards and the indexes"
EXAMPLE = "tempme bench moments --videos 3 --pieces 10 --piece-seconds 20 --segments 10,30,60 --json"
SIDE, FPS = 128, 8          # the demo's clips


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=3, help="long videos (default %(default)s)")
    parser.add_argument("--pieces", type=int, default=10, help="pieces per long video; videos x pieces of the 32 "
                        "(colour, shape, direction) at most, so that each caption names one piece (default "
                        "%(default)s)")
    parser.add_argument("--piece-seconds", type=float, default=20.0, help="length of a piece (default %(default)s)")
    parser.add_argument("--segments", default="10,30,60", help="window lengths in seconds to compare with whole "
                        "videos (default %(default)s)")
    parser.add_argument("--model", help="model URI to embed with (default: trained here by the demo's recipe)")
    parser.add_argument("--tracking-uri", help="MLflow store of --model")
    parser.add_argument("--seed", type=int, default=0, help="which pieces go where (default %(default)s)")


def measure(args) -> dict:

    combos = list(itertools.product(COLOURS, SHAPES, DIRECTIONS))
    if args.videos * args.pieces > len(combos):
        from tempme.errors import UserError

        raise UserError(f"--videos x --pieces must be at most {len(combos)} (one piece per caption), "
                        f"got {args.videos * args.pieces}")
    say = common.progress(args)
    lengths = common.numbers(args.segments, "--segments", kind=float)
    with common.scratch(args) as work:
        common.start_ray()
        model, tracking = (args.model, args.tracking_uri) if args.model else _demo_model(work / "demo", say)
        pieces = make_library(work / "library", args.videos, args.pieces, args.piece_seconds, args.seed)
        hours = args.videos * args.pieces * args.piece_seconds / 3600
        rows = [measure_cut(work, pieces, model, tracking, hours, seconds, say) for seconds in [None, *lengths]]
    return {"videos": args.videos, "pieces": args.pieces, "piece_seconds": args.piece_seconds, "model": model,
            "hours": hours, "cuts": rows}


def render(result: dict) -> str:
    header = ["samples", "windows", "top-1", "top-5", "chance top-1", "chance top-5", "video top-1",
              "preprocess s/h", "embed s/h"]
    rows = [[r["cut"], r["windows"], f"{r['top1']:.2f}", f"{r['top5']:.2f}", f"{r['chance_top1']:.2f}",
             f"{r['chance_top5']:.2f}", f"{r['video_top1']:.2f}", f"{r['preprocess_s_per_hour']:.0f}",
             f"{r['embed_s_per_hour']:.0f}"] for r in result["cuts"]]
    return (f"moments benchmark: {result['videos']} videos of {result['pieces']} pieces of "
            f"{result['piece_seconds']:g} s ({60 * result['hours']:.0f} min in all), each piece's caption searched, "
            f"model {result['model']}\n" + common.table(header, rows) +
            "\ntop-k: share of pieces whose video and an overlapping window are among the k best windows "
            "(a whole video: its video); video top-1: the best video is the piece's")


def make_library(folder: Path, videos: int, pieces: int, seconds: float, seed: int) -> list[dict]:
    """Long videos `long-N.mp4` in `folder`, each `pieces` pieces of `seconds` (a shape of the demo each); returns
    one record per piece: video id, start, end, caption."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    combos = list(itertools.product(COLOURS, SHAPES, DIRECTIONS))
    rng.shuffle(combos)
    found = []
    for v in range(videos):
        name, parts = f"long-{v}.mp4", []
        for p in range(pieces):
            colour, shape, direction = combos[v * pieces + p]
            part = folder / f".piece-{v}-{p}.mp4"
            render_video(part, SyntheticVideo(part.stem, colour, shape, direction, seconds, "corpus"), side=SIDE,
                         fps=FPS, lane=rng.uniform(0.2, 0.8))
            parts.append(part)
            found.append({"video": name, "start": p * seconds, "end": (p + 1) * seconds,
                          "caption": f"a {colour} {shape} moving {direction}"})
        _join(parts, folder / name)
        for part in parts:
            part.unlink()
    return found


def measure_cut(work: Path, pieces: list[dict], model: str, tracking: str, hours: float, seconds: float | None,
                say) -> dict:
    """Preprocess and embed the library cut into windows of `seconds` (None: whole), then search each piece."""
    cut = "whole videos" if seconds is None else f"{seconds:g} s windows"
    name = "whole" if seconds is None else f"{seconds:g}s"
    say(f"{cut}: preprocessing")
    started = time.perf_counter()
    report = run_preprocess(PreprocessOptions(out=str(work / f"shards-{name}"), videos=str(work / "library"),
                                              segment_seconds=seconds, samples_per_shard=16), log=lambda line: None)
    preprocess_s = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"preprocessing the long videos failed: {report.failures[:3]}")
    say(f"{cut}: embedding")
    started = time.perf_counter()
    embed_corpus(EmbedOptions(shards=str(work / f"shards-{name}"), model=model, out=str(work / f"index-{name}"),
                              workers=1, batch_size=8, tracking_uri=tracking))
    embed_s = time.perf_counter() - started
    search = TextSearch(work / f"index-{name}", tracking_uri=tracking)
    windows = len(search.index)
    ranked = [_windows_ranked(hits) for hits in search.search([p["caption"] for p in pieces], k=len(pieces),
                                                               moments=windows)]
    ranks = [_rank(p, found) for p, found in zip(pieces, ranked)]
    per_video = windows / len({p["video"] for p in pieces})
    overlapping = [_overlapping(p, seconds, per_video) for p in pieces]
    return {"cut": cut, "segment_seconds": seconds, "windows": windows,
            "top1": _mean(r is not None and r < 1 for r in ranks),
            "top5": _mean(r is not None and r < 5 for r in ranks),
            "video_top1": _mean(found[0][0] == p["video"] for p, found in zip(pieces, ranked)),
            "chance_top1": _mean(m / windows for m in overlapping),
            "chance_top5": _mean(1 - math.comb(windows - m, 5) / math.comb(windows, 5) if windows >= 5 else 1.0
                                 for m in overlapping),
            "preprocess_s": preprocess_s, "embed_s": embed_s,
            "preprocess_s_per_hour": preprocess_s / hours, "embed_s_per_hour": embed_s / hours}


def _windows_ranked(hits) -> list[tuple[str, float | None, float | None]]:
    """(video, start, end) of every window found, best first (a video's best window, then its next ones)."""
    scored = [(h.score, h.video_id, h.start, h.end) for h in hits]
    scored += [(s, h.video_id, a, b) for h in hits for a, b, s in h.moments]
    return [(v, a, b) for _, v, a, b in sorted(scored, key=lambda x: -x[0])]


def _rank(piece: dict, windows: list) -> int | None:
    """The rank of the first window that is of the piece's video and overlaps it (a whole video always does)."""
    for rank, (video, start, end) in enumerate(windows):
        if video == piece["video"] and (start is None or (start < piece["end"] and end > piece["start"])):
            return rank
    return None


def _overlapping(piece: dict, seconds: float | None, per_video: float) -> int:
    """Windows of the piece's video that overlap it (windows of `seconds`, back to back)."""
    if seconds is None:
        return 1
    first, last = math.floor(piece["start"] / seconds), math.ceil(piece["end"] / seconds)
    return min(last - first, math.ceil(per_video))


def _mean(values) -> float:
    """The mean of numbers, or the share of true ones."""
    values = list(values)
    return sum(values) / len(values)


def _demo_model(folder: Path, say) -> tuple[str, str]:
    """A model trained by the demo's recipe on its short clips: (model URI, MLflow store)."""
    from pipelines.demo.end_to_end import run_demo
    from pipelines.demo.options import DemoOptions

    say("training a model by the demo's recipe (its short clips only)")
    result = run_demo(DemoOptions(workdir=str(folder)), say=lambda line: None)
    return result.model_uri, result.tracking_uri


def _join(parts: list[Path], out: Path) -> None:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in parts))
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                           "-i", str(listing), "-c", "copy", str(out)], capture_output=True)
    listing.unlink()
    if done.returncode:
        raise RuntimeError(f"ffmpeg could not join {out}: {done.stderr.decode(errors='replace')[-500:]}")
