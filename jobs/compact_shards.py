"""Write again the shards that hold many removed videos, so that their bytes are gone (Ray tasks)."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.preprocess.compact import CompactOptions, compact_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CompactOptions)
    parser.epilog = ("A video that leaves the inputs of `tempme preprocess` is recorded as removed and skipped by\n"
                     "every reader, but its bytes stay in its shard. This copies the kept samples of each shard\n"
                     "over the threshold (bytes as they are, nothing decoded) into the shard's next generation\n"
                     "(train-000007.g1.tar) and swaps the sample table's rows in one commit. The old tars are\n"
                     "retired and deleted by a compaction run after --keep-days.\n"
                     "Example: tempme compact-shards s3://bucket/shards --min-removed 0")


def run(args) -> int:
    compact_shards(from_args(CompactOptions, args))
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
