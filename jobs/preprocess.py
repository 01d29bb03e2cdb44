"""Decode a video corpus (MSR-VTT layout or a manifest) into WebDataset shards, one Ray task per shard."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.preprocess import PreprocessOptions, run_preprocess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, PreprocessOptions)
    parser.epilog = ("Examples:\n"
                     "  tempme preprocess --msrvtt data/msrvtt --videos data/msrvtt/videos --out outputs/shards\n"
                     "  tempme preprocess --manifest corpus/manifest.csv --out s3://bucket/shards --decoders 16\n"
                     "  tempme preprocess --videos s3://bucket/library --out s3://bucket/library-shards\n"
                     "Re-running over the same --out after the corpus changed decodes only the new videos into new\n"
                     "shards and records the videos that left (OUT/_removed.parquet); finished shards stay as they "
                     "are.\n"
                     "Exit status: 0 all inputs made it into shards, 1 some failed (see OUT/_failures.csv), "
                     "2 bad options.")


def run(args) -> int:
    options = from_args(PreprocessOptions, args)
    report = run_preprocess(options, log=lambda line: print(line, flush=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
