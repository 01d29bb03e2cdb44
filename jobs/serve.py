"""Serve an embedding index: a search API and page on Ray Serve that follows the index's new versions."""
from __future__ import annotations

import argparse
import sys

import jobs.cli
from tempme.config import PRECISIONS
from tempme.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("--index", required=True, help="index directory or URI written by `tempme embed`")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default %(default)s; 0.0.0.0 inside a cluster pod)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas, each with its own text encoder "
                                                                "(default %(default)s)")
    parser.add_argument("--tracking-uri", help="MLflow store holding the index's models:/ model "
                                               "(default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="text-encoder precision; auto: bf16 where the hardware computes it natively")
    parser.add_argument("--refresh-s", type=float, default=10.0,
                        help="seconds between looks for a new index version (default %(default)s)")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.epilog = ("Example: tempme serve --index outputs/index --port 8000 --replicas 2   "
                     "then open http://127.0.0.1:8000/ or GET /search?q=a+dog&k=10")


def run(args) -> int:
    from pipelines.serve import ServeOptions, run_service

    if args.replicas < 1 or args.refresh_s <= 0 or not 0 < args.port < 65536:
        raise UserError("--replicas must be >= 1, --refresh-s > 0 and --port a port number")
    options = ServeOptions(index=args.index, tracking_uri=args.tracking_uri, precision=args.precision,
                           refresh_s=args.refresh_s)
    run_service(options, args.replicas, args.host, args.port, args.ray_address)
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
