"""Convert a checkpoint trained with the authors' TempMe code into an adapter directory of this project."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import jobs.cli
import tempme
from jobs.options import add_options
from pipelines.options import option


@dataclass
class ImportOptions:
    checkpoint: str = option(help="state dict saved by the authors' code (.pth/.bin)", positional=True)
    preset: str = option(help="the preset it was trained as, e.g. tempme-b32-12f")
    out: str = option(help="adapter directory to write")
    pretrained: str | None = option(None, "backbone weights to record in the adapter: 'openai' or a local CLIP file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, ImportOptions)
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
