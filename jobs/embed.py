"""Embed every video of the shards into a Lance index (Ray Data); incremental per model version."""
from __future__ import annotations

import argparse
import sys

import jobs.cli


def add_embed_arguments(parser: argparse.ArgumentParser, model_default: str | None = None,
                        required: bool = True) -> None:
    """The embedding options, shared with `tempme schedule` (which only changes their defaults)."""
    from pipelines.embed.job import PART_ROWS
    from tempme.precision import PRECISIONS

    parser.add_argument("--shards", required=required, help="shard directory or URI written by `tempme preprocess`")
    parser.add_argument("--model", required=required and model_default is None, default=model_default,
                        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/<path> or an "
                             "adapter directory" + (" (default %(default)s)" if model_default else ""))
    parser.add_argument("--out", required=required, help="index directory or URI (created if missing)")
    parser.add_argument("--workers", type=int, default=1,
                        help="most embedding actors, one model each; the pool grows to this (default 1)")
    parser.add_argument("--min-workers", type=int, default=1,
                        help="embedding actors kept from the start (default 1)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per model call (default 16)")
    parser.add_argument("--cpus-per-worker", type=int, default=1,
                        help="CPUs (torch threads) per actor; the pool needs workers x this many (default 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                        help="gpu: one GPU per actor (an autoscaling cluster adds GPU nodes); auto: GPUs when the cluster "
                             "has them, else CPU (default %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="inference precision; auto: bf16 where the CPU or GPU computes it natively "
                             "(default %(default)s)")
    parser.add_argument("--compile", action="store_true",
                        help="compile each actor's video encoder once (takes a minute or two per actor; "
                             "pays off over thousands of videos)")
    parser.add_argument("--part-rows", type=int, default=PART_ROWS,
                        help="rows per written fragment: at most this much work per writer is lost when a run is killed "
                             "(default %(default)s)")
    parser.add_argument("--progress-every", type=float, default=10.0,
                        help="seconds between progress lines (default %(default)s)")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--experiment", default="tempme-embed", help="MLflow experiment (default %(default)s)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_embed_arguments(parser)
    parser.epilog = ("Example: tempme embed --shards outputs/shards --model models:/tempme-msrvtt-b32@champion "
                     "--out outputs/index --workers 2")


def run(args) -> int:
    from pipelines.embed import embed_corpus

    report = embed_corpus(args.shards, args.model, args.out, workers=args.workers, min_workers=args.min_workers,
                          batch_size=args.batch_size, device=args.device, precision=args.precision,
                          compile=args.compile,
                          cpus_per_worker=args.cpus_per_worker, ray_address=args.ray_address,
                          tracking_uri=args.tracking_uri, experiment=args.experiment,
                          part_rows=args.part_rows, log=lambda line: print(line, flush=True),
                          progress_every=args.progress_every)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
