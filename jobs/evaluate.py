"""Text-video retrieval metrics (R@1/5/10/50, median and mean rank, R-sum) of a model on a split of the shards."""
from __future__ import annotations

import argparse
import json
import sys

import jobs.cli
from tempme.config import PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("--model", required=True,
                        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/<path> or an adapter dir")
    parser.add_argument("--shards", required=True, help="shard folder written by `tempme preprocess`")
    parser.add_argument("--split", default="test", help="split to evaluate (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per forward pass (default %(default)s)")
    from pipelines.evaluate.metrics import V2T_PROTOCOLS

    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="run on a GPU of the Ray cluster, or on its CPUs (default %(default)s); never in the "
                             "driver")
    parser.add_argument("--v2t-protocol", choices=V2T_PROTOCOLS, default="per_video",
                        help="video-to-text: other videos count once, by their best caption (the authors'), or "
                             "with every caption (default %(default)s)")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="inference precision; auto: bf16 where the CPU or GPU computes it natively "
                             "(default %(default)s)")
    parser.add_argument("--loader-workers", type=int, default=0, help="decoding processes (default %(default)s)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs "
                                               "(default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--plot", help="also save the recall-at-K plot to this PNG file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.epilog = "Example: tempme evaluate --model models:/tempme-msrvtt-b32@candidate --shards data/msrvtt/shards"


def run(args) -> int:
    from pipelines.evaluate.retrieval import evaluate_on_cluster, save_recall_plot

    result, resolved = evaluate_on_cluster(
        args.model, args.shards, args.split, gpu=args.device == "gpu", tracking_uri=args.tracking_uri,
        ray_address=args.ray_address, batch_size=args.batch_size, loader_workers=args.loader_workers,
        precision=args.precision, v2t_protocol=args.v2t_protocol)
    if args.plot:
        save_recall_plot(result.ranks, args.plot, f"{resolved.name} v{resolved.version}, {args.split}")
    if args.json:
        print(json.dumps({"model": {"name": resolved.name, "version": resolved.version, "uri": resolved.uri},
                          "split": args.split, "videos": result.videos, "texts": result.texts,
                          "v2t_protocol": result.v2t_protocol,
                          "metrics": result.metrics}, indent=1))
        return 0
    print(f"{resolved.name} v{resolved.version} on {args.split}: {result.videos} videos, {result.texts} texts "
          f"(video-to-text {result.v2t_protocol.replace('_', ' ')})")
    print(f"{'':4s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'R@50':>6s} {'MdR':>6s} {'MnR':>7s} {'R-sum':>7s}")
    for d in ("t2v", "v2t"):
        m = result.metrics
        print(f"{d:4s} {m[f'{d}_r1']:6.1f} {m[f'{d}_r5']:6.1f} {m[f'{d}_r10']:6.1f} {m[f'{d}_r50']:6.1f} "
              f"{m[f'{d}_medr']:6.1f} {m[f'{d}_meanr']:7.1f} {m[f'{d}_rsum']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
