"""Sampling a video's frames by seeking against decoding all of it, on generated H.264 videos of 20 s to 5 min
with a keyframe every 1 s, 2 s or 250 frames: seconds per video side by side in one run, one thread each,
which way the chooser took, the bytes it read, and whether both gave the same frames.

Every generated frame shows its own number (a 4 x 4 grid of black and white blocks in the centre, over
ffmpeg's moving test picture), so the frames each way picked are read back and compared.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np

from pipelines.bench import common
from pipelines.preprocess.decode import decode_video
from pipelines.preprocess.media import ffmpeg_exe
from pipelines.storage.location import Location
from tempme.errors import UserError

WORKDIR = "the generated videos"
EXAMPLE = "tempme bench decode --json"
CASES = "720p:20:1,720p:20:2,720p:60:1,720p:60:2,720p:60:250f,720p:300:1,720p:300:2,720p:300:250f,1080p:300:2"
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
BITS = 16           # of the frame number (up to 65,535 frames: 36 min at 30 fps)
CODE_SIDE = 64      # pixels of the generated number grid, scaled up to half the picture's short side


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=CASES, help="SIZE:SECONDS:KEYFRAMES, keyframes every N seconds or Nf "
                        "frames (default %(default)s)")
    parser.add_argument("--source-fps", type=int, default=30, help="frame rate of the videos (default %(default)s)")
    parser.add_argument("--frames", type=int, default=12, help="frames kept per video (default %(default)s)")
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate before picking (default %(default)s)")
    parser.add_argument("--resolution", type=int, default=224, help="frame side (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each way per video; the best counts")
    parser.add_argument("--store", help="an object-store folder (s3://bucket/prefix) the videos are uploaded to and "
                        "decoded from: seeking reads ranges, decoding all of it downloads the file first")


def measure(args) -> dict:

    say = common.progress(args)
    settings = dict(frames=args.frames, fps=args.fps, resolution=args.resolution, timeout=3600)
    rows = []
    with common.scratch(args) as work:
        for case in common.names(args.cases, "--cases"):
            size, seconds, keys = _case(case)
            path = work / f"{case.replace(':', '-')}.mp4"
            if not path.exists():
                say(f"encoding {case}")
                numbered_video(path, seconds, args.source_fps, SIZES[size], keyint=_keyint(keys, args.source_fps))
            source = str(path)
            if args.store:
                remote = Location.of(args.store).child(path.name)
                if not remote.exists():
                    remote.put_file(str(path))
                source = remote.uri
            timed = {}
            for method in ("sequential", "auto") * args.repeat:
                started = time.perf_counter()
                decoded = decode_video(source, method=method, **settings)
                took = time.perf_counter() - started
                if method not in timed or took < timed[method][0]:
                    timed[method] = (took, decoded)
            (seq_s, seq), (auto_s, auto) = timed["sequential"], timed["auto"]
            rows.append({"case": case, "size": size, "seconds": seconds, "keyframes": keys,
                         "bytes": path.stat().st_size, "sequential_s": seq_s, "sampler_s": auto_s,
                         "speedup": seq_s / auto_s, "method": auto.method, "read_bytes": auto.read_bytes,
                         "same_frames": numbers(seq.frames) == numbers(auto.frames)
                         and seq.available == auto.available})
            say(f"{case}: {rows[-1]['speedup']:.2f}x ({auto.method})")
    return {"frames": args.frames, "fps": args.fps, "resolution": args.resolution, "source_fps": args.source_fps,
            "store": args.store, "cases": rows}


def render(result: dict) -> str:
    header = ["video", "keyframe every", "MB", "sequential s", "sampler s", "speed-up", "way", "read", "same frames"]
    rows = [[f"{r['size']} {r['seconds']:g} s", _keys_words(r["keyframes"]), f"{r['bytes'] / 1e6:.1f}",
             f"{r['sequential_s']:.2f}", f"{r['sampler_s']:.2f}", f"{r['speedup']:.2f}x", r["method"],
             f"{100 * r['read_bytes'] / r['bytes']:.0f}%", "yes" if r["same_frames"] else "NO"]
            for r in result["cases"]]
    where = f", read from {result['store']}" if result.get("store") else ""
    return (f"decode benchmark: {result['frames']} frames of {result['resolution']} px at {result['fps']:g} fps "
            f"from H.264 at {result['source_fps']} fps, one thread each{where}\n" + common.table(header, rows))


def numbered_video(path: Path, seconds: float, fps: int, size: tuple[int, int], keyint: int | None = None,
                   codec: str = "libx264", setpts: str = "", extra: tuple[str, ...] = ()) -> Path:
    """An encoded video whose every frame shows its number (see `read_number`) over a moving test picture;
    `keyint`: frames between keyframes (None: the encoder's default); `setpts`: an ffmpeg expression that
    retimes the frames (a variable frame rate). The container follows the file name."""
    width, height = size
    count = round(seconds * fps)
    side = min(width, height) // 2
    keys = ["-g", str(keyint), "-keyint_min", str(keyint)] if keyint else []
    if keyint and codec == "libx264":
        keys += ["-sc_threshold", "0"]
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r={fps}:d={count / fps}",
               "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{CODE_SIDE}x{CODE_SIDE}", "-r", str(fps), "-i", "pipe:",
               "-filter_complex", f"[1:v]scale={side}:{side}:flags=neighbor,format=yuv420p[code];"
                                  "[0:v][code]overlay=(W-w)/2:(H-h)/2:shortest=1"
                                  + (f",setpts='{setpts}'" if setpts else ""),
               *(["-fps_mode", "vfr"] if setpts else []),
               "-c:v", codec, *({"libx264": ["-preset", "veryfast"]}.get(codec, [])), *keys,
               "-pix_fmt", "yuv420p", *extra, str(path)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for i in range(count):
            process.stdin.write(number_grid(i).tobytes())
        process.stdin.close()
    except BrokenPipeError:
        pass
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg could not make {path}: {process.stderr.read().decode(errors='replace')[-500:]}")
    return path


def number_grid(number: int) -> np.ndarray:
    """A CODE_SIDE square grey image of 4 x 4 blocks, black or white by the bits of `number`."""
    bits = (number >> np.arange(BITS)) & 1
    cells = np.where(bits.reshape(4, 4) == 1, 235, 16).astype(np.uint8)
    return np.kron(cells, np.ones((CODE_SIDE // 4, CODE_SIDE // 4), np.uint8))


def read_number(frame: np.ndarray) -> int:
    """The number a sampled frame shows: its grid spans the centre half of the short side."""
    h, w = frame.shape[:2]
    side = min(h, w) / 2
    cell = side / 4
    y0, x0 = (h - side) / 2, (w - side) / 2
    number = 0
    for bit in range(BITS):
        row, col = divmod(bit, 4)
        y, x = int(y0 + (row + 0.5) * cell), int(x0 + (col + 0.5) * cell)
        if frame[y - 2:y + 3, x - 2:x + 3].mean() > 128:
            number |= 1 << bit
    return number


def numbers(frames: np.ndarray) -> list[int]:
    return [read_number(f) for f in frames]


def _case(case: str) -> tuple[str, float, str]:

    try:
        size, seconds, keys = case.split(":")
        if size not in SIZES:
            raise ValueError(f"size {size!r} is not one of {', '.join(SIZES)}")
        return size, float(seconds), keys
    except ValueError as e:
        raise UserError(f"--cases {case!r}: expected SIZE:SECONDS:KEYFRAMES such as 720p:60:2 ({e})") from None


def _keyint(keys: str, fps: int) -> int:
    return int(keys[:-1]) if keys.endswith("f") else round(float(keys) * fps)


def _keys_words(keys: str) -> str:
    return f"{keys[:-1]} frames" if keys.endswith("f") else f"{keys} s"
