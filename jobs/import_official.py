"""Convert a checkpoint trained with the authors' TempMe code into an adapter directory of this project."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
import tempme


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="state dict saved by the authors' code (.pth/.bin)")
    parser.add_argument("--preset", required=True, help="the preset it was trained as, e.g. tempme-b32-12f")
    parser.add_argument("--pretrained", default=None,
                        help="backbone weights to record in the adapter: 'openai' or a local CLIP file")
    parser.add_argument("--out", required=True, help="adapter directory to write")
    parser.epilog = ("Example: tempme import-official ckpt_msrvtt.pth --preset tempme-b32-12f "
                     "--pretrained openai --out adapters/tempme-b32")


def run(args) -> int:
    from tempme.official import import_official

    config = tempme.get_config(args.preset)
    if args.pretrained:
        config = config.replace(pretrained=args.pretrained)
    out = import_official(args.checkpoint, config, args.out)
    print(f"adapter written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
