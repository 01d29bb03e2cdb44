"""Paint which input patches each final token of the video encoder merged, across the frames of a video."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

import jobs.cli
import tempme
from jobs.options import add_options
from pipelines.options import option


@dataclass
class VisualizeOptions:
    video: str = option(help="a video file", positional=True)
    preset: str = option("tempme-b32-12f", "model preset")
    pretrained: str | None = option(None, "backbone weights: 'openai' or a local CLIP file")
    adapter: str | None = option(None, "a trained adapter directory")
    fps: float = option(1.0, "sampling rate before picking frames")
    out: str = option("merge.png", "PNG to write")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, VisualizeOptions)
    parser.epilog = "Example: tempme visualize cooking.mp4 --preset tempme-b32-12f --pretrained openai --out merge.png"


def run(args) -> int:

    from pipelines.preprocess.decode import decode_video
    from tempme.visualize import render_groups, token_groups

    model = tempme.load_model(args.preset if args.adapter is None else None, pretrained=args.pretrained,
                              adapter=args.adapter)
    decoded = decode_video(args.video, frames=model.config.frames, fps=args.fps,
                           resolution=model.image_size, timeout=600)
    valid = len(decoded.frames)
    frames = np.zeros((model.config.frames, *decoded.frames.shape[1:]), np.uint8)
    frames[:valid] = decoded.frames
    groups = token_groups(model, frames, valid)
    render_groups(frames[:valid], groups[:valid]).save(args.out)
    print(f"{args.out}: {valid} frames, {len(np.unique(groups[:valid]))} token groups ({model.config.name})")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
