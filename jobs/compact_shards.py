"""Write again the shards that hold many removed videos, so that their bytes are gone (Ray tasks)."""
from __future__ import annotations

import argparse
import datetime as dt
import sys

import jobs.cli
from pipelines.storage.location import Location
from tempme.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="a shard folder or URI (tempme preprocess --out)")
    parser.add_argument("--min-removed", type=float, default=0.25, metavar="SHARE",
                        help="write a shard again when at least this share of its samples is removed "
                             "(default %(default)s; 0: any shard with a removed video)")
    parser.add_argument("--keep-days", type=float, default=7.0,
                        help="delete the tars retired by earlier compactions after this many days "
                             "(default %(default)s, as old versions of the sample table)")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.epilog = ("A video that leaves the inputs of `tempme preprocess` is recorded as removed and skipped by\n"
                     "every reader, but its bytes stay in its shard. This copies the kept samples of each shard\n"
                     "over the threshold (bytes as they are, nothing decoded) into the shard's next generation\n"
                     "(train-000007.g1.tar) and swaps the sample table's rows in one commit. The old tars are\n"
                     "retired and deleted by a compaction run after --keep-days.\n"
                     "Example: tempme compact-shards s3://bucket/shards --min-removed 0")


def run(args) -> int:
    from pipelines.preprocess.compact import compact_shards

    if not 0 <= args.min_removed <= 1:
        raise UserError(f"--min-removed must be from 0 to 1, got {args.min_removed}")
    if args.keep_days < 0:
        raise UserError(f"--keep-days must be 0 or more, got {args.keep_days}")
    compact_shards(Location.of(args.folder), args.min_removed, dt.timedelta(days=args.keep_days),
                   ray_address=args.ray_address)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
