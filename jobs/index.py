"""Operators' view of an embedding index: its versions and search structure, compaction, old-version cleanup."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.index.table import RETENTION, VERSIONS_SHOWN
from pipelines.options import option


def _duration(text: str) -> dt.timedelta:
    """'7d', '12h', '30m' -> timedelta."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 7d, 12h or 30m")
    return dt.timedelta(**{units[text[-1]]: int(text[:-1])})


@dataclass
class IndexOptions:
    action: str = option(help="info: versions, rows, model, how each version is searched; compact: merge small "
                              "fragments, fold new rows into the ANN index (or build it); cleanup: delete versions "
                              "older than --older-than (never the latest)", positional=True,
                         choices=("info", "compact", "cleanup"))
    index: str = option(help="index directory or URI written by `tempme embed`", positional=True)
    older_than: dt.timedelta = option(RETENTION, "cleanup: keep versions younger than this, for readers pinned "
                                                 "to them", parse=_duration)
    versions: int = option(VERSIONS_SHOWN, "info: how many of the latest versions to describe")
    json: bool = option(False, "print JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, IndexOptions)
    parser.epilog = "Example: tempme index info outputs/index; tempme index cleanup s3://bucket/index --older-than 3d"


def run(args) -> int:
    from pipelines.index import IndexStore, WriterLease
    from pipelines.storage.lease import run_name
    
    args = from_args(IndexOptions, args)
    store = IndexStore(args.index)
    store.root.check_usable("index")
    action = {"info": lambda: store.info(args.versions), "compact": store.compact,
              "cleanup": lambda: store.cleanup(args.older_than)}[args.action]
    if args.action == "info":
        result = action()
    else:      # writers of the index: one at a time, with the embedding runs
        with WriterLease(store, f"index-{args.action}-{run_name()}"):
            result = action()
    if args.json or args.action != "info":
        print(json.dumps(result, indent=1, default=str))
        return 0
    model = result["model"]
    print(f"{result['location']}: version {result['version']}, {result['rows']} videos, "
          f"{result['fragments']} fragments, {result['failures']} failures recorded")
    print(f"  model {model['name']} v{model['version']} ({model['uri']})")
    if result["pending"]:
        print(f"  being re-embedded with {result['pending']['name']} v{result['pending']['version']}")
    if result["serving"] is not None:
        print(f"  readers search version {result['serving']} until the latest one can be searched as fast "
              f"(its model's rows published and indexed)")
    for v in result["versions"]:
        reader = "  <- readers" if v["version"] == (result["serving"] or result["version"]) else ""
        print(f"  version {v['version']:>5}  {v['timestamp']}  {v['rows']:>10} rows  {v['model'] or '-'}: "
              f"{v['search']}{reader}")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
