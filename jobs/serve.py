"""Serve an embedding index: a search API and page on Ray Serve that follows the index's new versions."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.serve.options import ServeOptions, ServiceOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, ServeOptions)
    add_options(parser, ServiceOptions)
    parser.epilog = ("Example: tempme serve --index outputs/index --port 8000 --replicas 2   "
                     "then open http://127.0.0.1:8000/ or GET /search?q=a+dog&k=10")


def run(args) -> int:
    from pipelines.serve import run_service

    run_service(from_args(ServeOptions, args), from_args(ServiceOptions, args))
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
