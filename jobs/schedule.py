"""Run the incremental embedding against a registry alias (nightly); --print-cron shows the crontab line."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import jobs.cli
from jobs.embed import add_embed_arguments
from tempme.errors import UserError

# What pipelines/train/configs/msrvtt-tempme-b32.yaml registers (as @candidate); `tempme promote` moves @champion.
DEFAULT_MODEL = "models:/tempme-msrvtt-b32@champion"
DEFAULT_CRON = "0 2 * * *"   # every night at 02:00, machine time
REPO_ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_embed_arguments(parser, model_default=DEFAULT_MODEL, required=False)
    parser.add_argument("--print-cron", action="store_true",
                        help="print the crontab line that runs this nightly, and exit")
    parser.add_argument("--cron", default=DEFAULT_CRON, help="schedule for --print-cron (default %(default)r)")
    parser.add_argument("--log", default=str(REPO_ROOT / "outputs" / "nightly-embed.log"),
                        help="where the cron line appends the output (default %(default)s)")
    parser.epilog = ("Training registers each new version as <registered_model>@candidate; `tempme promote "
                     "models:/tempme-msrvtt-b32@candidate --alias champion` moves champion to it.\n"
                     "Each run embeds only the videos the alias's current version has not embedded yet; when the "
                     "alias moves to a new version, the next run re-embeds everything and swaps the index at once.\n"
                     "Example: tempme schedule --shards outputs/shards --out outputs/index --print-cron "
                     "| crontab -   (replaces your crontab: merge by hand if you have one)")


def cron_line(args) -> str:
    """`<schedule> cd <repo> && <python> -m jobs.schedule <options> >> <log> 2>&1`, every option spelled out
    (cron runs with an empty environment, so nothing may depend on the caller's shell)."""
    command = [sys.executable, "-m", "jobs.schedule", "--shards", args.shards or "SHARDS",
               "--out", args.out or "INDEX", "--model", args.model, "--workers", str(args.workers),
               "--min-workers", str(args.min_workers),
               "--batch-size", str(args.batch_size), "--cpus-per-worker", str(args.cpus_per_worker),
               "--device", args.device, "--precision", args.precision, "--part-rows", str(args.part_rows),
               "--progress-every", str(args.progress_every), "--experiment", args.experiment]
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    for flag, value in (("--ray-address", args.ray_address), ("--tracking-uri", tracking_uri)):
        if value:
            command += [flag, value]
    if args.compile:
        command.append("--compile")
    log = Path(args.log)
    return (f"{args.cron} mkdir -p {shlex.quote(str(log.parent))} && cd {shlex.quote(str(REPO_ROOT))} && "
            f"{shlex.join(command)} >> {shlex.quote(str(log))} 2>&1")


def run(args) -> int:
    if args.print_cron:
        print(f"# tempme nightly embedding ({args.model}); install with `crontab -e`")
        print(cron_line(args))
        return 0
    missing = [flag for flag in ("shards", "out") if not getattr(args, flag)]
    if missing:
        raise UserError(f"missing {', '.join('--' + m for m in missing)}")
    from jobs.embed import run as run_embed

    return run_embed(args)


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
