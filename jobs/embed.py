"""Embed every video of the shards into a Lance index (Ray Data); incremental per model version."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.embed import embed_corpus
from pipelines.embed.options import EmbedOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, EmbedOptions, required=("shards", "model", "out"))
    parser.epilog = ("Example: tempme embed --shards outputs/shards --model models:/tempme-msrvtt-b32@champion "
                     "--out outputs/index --workers 2")


def run(args) -> int:
    return embed(from_args(EmbedOptions, args))


def embed(options: EmbedOptions) -> int:
    """Run the embedding job with `options`, printing its progress lines and then its summary."""
    report = embed_corpus(options, log=lambda line: print(line, flush=True))
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
