"""The `tempme` command: one subcommand per job, each a plain module under `jobs/`.

Every job module exposes `add_arguments(parser)` and `run(args) -> int`, and runs on its own as
`python -m jobs.<module>` (what `ray job submit` calls) through `jobs.cli.run_module`. Only the module of
the subcommand being run is imported, so `tempme --help` stays fast and a job never pays for another's
imports.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from jobs.output import configure_output
from pipelines.bench import common
from tempme.errors import UserError

# subcommand -> (module under jobs/, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("preprocess", "decode a video corpus into WebDataset shards (Ray tasks)"),
    "train": ("train", "fine-tune a TempMe model with Ray Train, tracked in MLflow"),
    "evaluate": ("evaluate", "text-video retrieval metrics of a model on a split of the shards"),
    "embed": ("embed", "embed every video of the shards into a Lance index (Ray Data)"),
    "index": ("index", "an index's versions and search structure; compact it, clean up old versions"),
    "search": ("search", "find the videos of an index that best match a text query"),
    "serve": ("serve", "a search API and page over an index, on Ray Serve, following its new versions"),
    "flops": ("flops", "per-layer token schedule, GMACs and trainable parameters of a preset"),
    "visualize": ("visualize", "paint which patches each final token merged, across frames"),
    "import-official": ("import_official", "convert a checkpoint of the authors' code into an adapter"),
    "upgrade-shards": ("upgrade_shards", "convert shard folders written before the sample table, once"),
    "compact-shards": ("compact_shards", "write again the shards holding removed videos, without them"),
    "submit": ("submit", "submit any job to a Ray cluster through the job submission API"),
    "nightly": ("nightly", "run the incremental embedding against a registry alias, nightly from cron"),
    "promote": ("promote", "point a registry alias (e.g. champion) at a checked model version"),
    "demo": ("demo", "the whole pipeline end to end on a small generated corpus"),
}

# old subcommand name -> its new name; each still works, with a note, for one release
ALIASES: dict[str, str] = {"schedule": "nightly"}

VERBOSE = "also the libraries' own logs (Ray, MLflow, open_clip) as they come, not only the job's lines"

# `tempme bench <what>` -> (module under pipelines/bench/, summary); `python -m jobs.bench <what>` runs one alone
BENCHMARKS: dict[str, tuple[str, str]] = {
    "model": ("model", "video-encoder throughput of presets side by side"),
    "preprocess": ("preprocess", "preprocessing job vs plain ffmpeg, 1 and 2 decoders"),
    "decode": ("decode", "sampling frames by seeking vs decoding whole videos, 20 s to 5 min, frames compared"),
    "reader": ("reader", "shards to uint8 batches, videos/s, from their store vs a local copy"),
    "train": ("train", "training throughput and peak memory, 1 and 2 workers"),
    "embed": ("embed", "embedding job vs a plain loop, 1 and 2 workers"),
    "plan": ("plan", "each stage's planning at millions of videos: driver memory, time, bytes read"),
    "search": ("search", "search latency and recall, exact vs ANN, over large clustered indexes"),
    "serve": ("serve", "search service QPS and p50/p99 over HTTP and in-process, publish-to-served time"),
    "promotion": ("promotion", "search latency while a new model version is embedded, published and indexed"),
    "moments": ("moments", "long videos cut into windows: each piece's caption finds its moment, cost per hour"),
}


def _module(name: str):
    return importlib.import_module(f"jobs.{name}")


def _benchmark(name: str):
    """`pipelines.bench.<name>` as a job: its own options and the shared ones, run by `pipelines.bench.common`."""
    return common.job(name)


def _add_commands(sub, table: dict[str, tuple[str, str]], selected: str | None, load=_module) -> None:
    """Register every subcommand; import (`load`) and configure only the one being run."""
    for command, (module, summary) in table.items():
        p = sub.add_parser(command, help=summary, description=summary,
                           aliases=[old for old, new in ALIASES.items() if new == command and table is COMMANDS],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if command == selected:
            job = load(module)
            job.add_arguments(p)
            # after the subcommand too; SUPPRESS keeps `tempme --verbose demo` from being undone by its default
            p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE)
            p.set_defaults(_run=job.run)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    words = [a for a in argv if not a.startswith("-")]
    command = ALIASES.get(words[0], words[0]) if words else None
    parser = argparse.ArgumentParser(
        prog="tempme",
        description="TempMe text-video retrieval pipeline: preprocess, train, evaluate, embed, search.",
        epilog="Example: tempme flops --preset tempme-b32-12f",
    )
    parser.add_argument("--verbose", action="store_true", help=VERBOSE)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_commands(sub, COMMANDS, command)
    bench = sub.add_parser("bench", help="benchmarks that print figures side by side",
                           description="Benchmarks that print figures side by side.",
                           epilog="Example: tempme bench model --presets lora,tome,tempme")
    bench_sub = bench.add_subparsers(dest="benchmark", metavar="WHAT", required=True)
    _add_commands(bench_sub, BENCHMARKS, words[1] if command == "bench" and len(words) > 1 else None, _benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    words = [a for a in argv if not a.startswith("-")]
    if words[0] in ALIASES:
        print(f"tempme {words[0]} is now `tempme {ALIASES[words[0]]}`; the old name goes in the next release",
              file=sys.stderr)
    return _run(args._run, args, " ".join(["tempme"] + words[:2 if words[0] == "bench" else 1]))


def run_module(module_name: str) -> int:
    """`python -m jobs.<name>`: the same arguments as the matching `tempme` subcommand."""
    job = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m {module_name}", description=job.__doc__)
    job.add_arguments(parser)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE)
    return _run(job.run, parser.parse_args(), parser.prog)


def _run(run, args: argparse.Namespace, name: str) -> int:
    """Run a job; a mistake in its input (`UserError`) is one line on stderr and exit status 2, the way
    argparse reports a bad option, and anything else keeps its traceback."""
    configure_output(args.verbose)
    try:
        return int(run(args) or 0)
    except UserError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
