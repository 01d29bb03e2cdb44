"""Convert shard folders written before the sample table (per-shard catalogs) into the current format, once."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import jobs.cli
from jobs.options import add_options
from pipelines.options import option
from pipelines.storage.location import Location


@dataclass
class UpgradeOptions:
    folders: list[str] = option(help="shard folders or URIs (tempme preprocess --out)", positional=True,
                                nargs="+", metavar="FOLDER")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, UpgradeOptions)
    parser.epilog = ("Training, evaluation and embedding read the sample table (FOLDER/_samples.lance) that\n"
                     "`tempme preprocess` writes; a folder written by an older version has one catalog per shard\n"
                     "instead. This writes its sample table in one commit; the catalogs stay and are no longer read.\n"
                     "`tempme preprocess` over such a folder does the same by itself.\n"
                     "Example: tempme upgrade-shards s3://bucket/shards")


def run(args) -> int:
    from pipelines.preprocess.upgrade import upgrade_folder

    for folder in args.folders:
        converted = upgrade_folder(Location.of(folder))
        print(f"{folder}: " + (f"converted {converted} shard catalogs into the sample table" if converted
                               else "already current (or no shards), nothing to do"))
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
