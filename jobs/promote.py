"""Point a registry alias (e.g. champion, which the nightly embedding follows) at a checked model version."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import jobs.cli
from jobs.options import add_options
from pipelines.model.registry import promote
from pipelines.options import TrackingOptions, option
from pipelines.tracking import use_store


@dataclass
class PromoteOptions(TrackingOptions):
    model: str = option(help="the version to promote: models:/<name>@<alias> (e.g. the candidate training "
                             "registered) or models:/<name>/<version> (e.g. an older one, to roll back)",
                        positional=True, metavar="MODEL_URI")
    alias: str = option(help="the alias to move to that version, e.g. champion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, PromoteOptions)
    parser.epilog = ("Training registers each new version as <registered_model>@candidate; promote it once its "
                     "metrics are checked (`tempme evaluate`). The next nightly run re-embeds with it.\n"
                     "Example: tempme promote models:/tempme-msrvtt-b32@candidate --alias champion")


def run(args) -> int:

    uri = use_store(args.tracking_uri)
    version = promote(args.model, args.alias)
    print(f"promoted {args.model} (version {version}) to alias {args.alias!r} at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
