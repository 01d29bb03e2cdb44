"""Run the incremental embedding against a registry alias (nightly); --print-cron shows the crontab line."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import jobs.cli
from jobs.embed import embed
from jobs.options import add_options, from_args, to_argv
from pipelines.embed.options import EmbedOptions
from pipelines.options import option
from tempme.errors import UserError

# What pipelines/train/configs/msrvtt-tempme-b32.yaml registers (as @candidate); `tempme promote` moves @champion.
DEFAULT_MODEL = "models:/tempme-msrvtt-b32@champion"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CronOptions:
    print_cron: bool = option(False, "print the crontab line that runs this nightly, and exit")
    cron: str = option("0 2 * * *", "schedule for --print-cron (machine time)")
    log: str = option(str(REPO_ROOT / "outputs" / "nightly-embed.log"), "where the cron line appends the output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, EmbedOptions, defaults={"model": DEFAULT_MODEL})
    add_options(parser, CronOptions)
    parser.epilog = ("Training registers each new version as <registered_model>@candidate; `tempme promote "
                     "models:/tempme-msrvtt-b32@candidate --alias champion` moves champion to it.\n"
                     "Each run embeds only the videos the alias's current version has not embedded yet; when the "
                     "alias moves to a new version, the next run re-embeds everything and swaps the index at once.\n"
                     "Example: tempme nightly --shards outputs/shards --out outputs/index --print-cron "
                     "| crontab -   (replaces your crontab: merge by hand if you have one)")


def cron_line(options: EmbedOptions, schedule: CronOptions) -> str:
    """`<schedule> cd <repo> && <python> -m jobs.nightly <options> >> <log> 2>&1`, every option spelled out
    (cron runs with an empty environment, so nothing may depend on the caller's shell)."""
    options = dataclasses.replace(options, shards=options.shards or "SHARDS", out=options.out or "INDEX",
                                  tracking_uri=options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    command = [sys.executable, "-m", "jobs.nightly", *to_argv(options)]
    log = Path(schedule.log)
    return (f"{schedule.cron} mkdir -p {shlex.quote(str(log.parent))} && cd {shlex.quote(str(REPO_ROOT))} && "
            f"{shlex.join(command)} >> {shlex.quote(str(log))} 2>&1")


def run(args) -> int:
    options = from_args(EmbedOptions, args)
    if args.print_cron:
        print(f"# tempme nightly embedding ({options.model}); install with `crontab -e`")
        print(cron_line(options, from_args(CronOptions, args)))
        return 0
    missing = [flag for flag in ("shards", "out") if not getattr(options, flag)]
    if missing:
        raise UserError(f"missing {', '.join('--' + m for m in missing)}")
    return embed(options)


if __name__ == "__main__":
    sys.exit(jobs.cli.run_module(__name__))
