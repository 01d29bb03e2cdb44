"""Paint which input patches each final token of the video encoder merged, across the frames of a video."""
from __future__ import annotations

import argparse
import sys

import numpy as np

import jobs.cli
import tempme


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video file")
    parser.add_argument("--preset", default="tempme-b32-12f", help="model preset (default: tempme-b32-12f)")
    parser.add_argument("--pretrained", default=None, help="backbone weights: 'openai' or a local CLIP file")
    parser.add_argument("--adapter", default=None, help="a trained adapter directory")
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate before picking frames")
    parser.add_argument("--out", default="merge.png", help="PNG to write (default: merge.png)")
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
