"""Text-video retrieval metrics (R@1/5/10/50, median and mean rank, R-sum) of a model on a split of the shards."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.evaluate.options import EvaluateOptions
from pipelines.options import option


@dataclass
class Output:
    plot: str | None = option(None, "also save the recall-at-K plot to this PNG file")
    json: bool = option(False, "print JSON instead of a table")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, EvaluateOptions)
    add_options(parser, Output)
    parser.epilog = "Example: tempme evaluate --model models:/tempme-msrvtt-b32@candidate --shards data/msrvtt/shards"


def run(args) -> int:
    from pipelines.evaluate.on_cluster import evaluate_on_cluster

    result, resolved = evaluate_on_cluster(from_args(EvaluateOptions, args))
    if args.plot:
        from pipelines.evaluate.retrieval import save_recall_plot

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
