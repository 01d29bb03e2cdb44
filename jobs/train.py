"""Fine-tune a TempMe model with Ray Train on the shards, tracked in MLflow, and register the best adapter."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import jobs.cli
from jobs.options import add_options
from pipelines.options import ClusterOptions, option
from pipelines.tracking import check_reachable, resolve_tracking_uri


@dataclass
class TrainOptions(ClusterOptions):
    config: str = option(help="YAML config file, or the name of a shipped recipe (tiny, msrvtt-tempme-b32, ...: "
                              "pipelines/train/configs/)")
    set: list[str] = option(help="override one config value by dotted key (repeatable), e.g. optim.lr=3e-4",
                            repeat=True, metavar="KEY=VALUE", default_factory=list)
    check: bool = option(False, "check the config, shards and tracking store, print the plan, and stop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, TrainOptions)
    parser.epilog = ("Example: tempme train --config pipelines/train/configs/tiny.yaml "
                     "--set data.shards=outputs/synthetic/shards --set train.epochs=2")


def run(args) -> int:
    from pipelines.train.config import check_config, load_config
    from pipelines.train.job import run_training
    from pipelines.train.plan import plan_training

    cfg = load_config(args.config, args.set)
    print(f"# resolved config\n{cfg.to_yaml()}", flush=True)
    if args.check:
        check_config(cfg)
        plan = plan_training(cfg)
        check_reachable(resolve_tracking_uri(cfg.tracking.uri))
        print(f"ok: {plan}")
        return 0
    outcome = run_training(cfg, ray_address=args.ray_address)
    print(f"trained {outcome.steps} steps; best step {outcome.best_step}; MLflow run {outcome.run_id} "
          f"at {outcome.tracking_uri}")
    print(f"registered {outcome.model_uri} (version {outcome.version})")
    for key, value in sorted(outcome.summary.items()):
        print(f"  {key:40s} {value:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
