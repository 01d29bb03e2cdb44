"""Per-layer token schedule, video-encoder GMACs and trainable parameters of a preset, by running it."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import jobs.cli
import tempme
from jobs.options import add_options
from pipelines.options import option


@dataclass
class FlopsOptions:
    preset: list[str] = option(help="preset name (repeatable), e.g. tempme-b32-12f", repeat=True)
    json: bool = option(False, "print one JSON object per preset")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, FlopsOptions)
    parser.epilog = "Example: tempme flops --preset tempme-b32-12f --preset lora-b32-12f"


def run(args) -> int:
    from tempme.flops import complexity_report, format_report

    for name in args.preset:
        report = complexity_report(tempme.get_config(name))
        print(json.dumps(report) if args.json else format_report(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
