"""Every option is defined once: in its job's record, from which the flags, defaults and --help are made."""
import argparse
import ast
import dataclasses
import datetime as dt
import importlib
from pathlib import Path

import pytest

import jobs.cli
from jobs.options import add_options, from_args
from pipelines.options import ClusterOptions, TrackingOptions, comma_list, option

ROOT = Path(__file__).resolve().parents[2]


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    importlib.import_module(f"jobs.{jobs.cli.COMMANDS[command][0]}").add_arguments(parser)
    return parser


def _records() -> dict[str, object]:
    """Every options record the jobs build their flags from: field name -> default, over all records."""
    records = set()
    for command, (module, _) in jobs.cli.COMMANDS.items():
        job = importlib.import_module(f"jobs.{module}")
        for value in vars(job).values():
            if dataclasses.is_dataclass(value) and isinstance(value, type):
                records.add(value)
    records |= {base for record in records for base in record.__mro__ if dataclasses.is_dataclass(base)}
    return {f.name: f.default for record in records for f in dataclasses.fields(record)
            if "help" in f.metadata and f.default is not dataclasses.MISSING}


# Parameters that share a job option's name and default but not its meaning: `device` is a torch device in the
# library ("cpu", "cuda"), where the jobs' option chooses CPUs or GPUs of the cluster; the synthetic corpus's
# `workers` are ffmpeg processes, the demo's Ray Train workers.
OTHER_MEANING = {"device", "workers"}


def _literal_defaults(path: Path):
    """(function, parameter, literal default) of every function under `path`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
            defaults += node.args.kw_defaults
            for param, default in zip(params, defaults):
                if isinstance(default, ast.Constant) and default.value is not None:
                    yield node.name, param.arg, default.value


def test_no_job_gives_a_flag_a_default_of_its_own():
    stray = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in (ROOT / "jobs").glob("*.py") if p.name != "options.py"
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
             and any(k.arg == "default" and "SUPPRESS" not in ast.unparse(k.value) for k in node.keywords)]
    assert stray == [], f"defaults written in a job instead of its options record: {stray}"


def test_no_function_repeats_the_default_of_an_option():
    defaults = _records()
    assert {"batch_size", "frames", "ray_address", "port", "min_removed"} <= set(defaults)
    repeated = [f"{p.relative_to(ROOT)}: {fn}({name}={value!r})"
                for folder in ("jobs", "pipelines") for p in (ROOT / folder).rglob("*.py")
                for fn, name, value in _literal_defaults(p)
                if name in defaults and defaults[name] == value and name not in OTHER_MEANING
                and p.parts[-2] != "bench"]
    assert repeated == [], f"option defaults written again in a function's signature: {repeated}"


@pytest.mark.parametrize("command", sorted(jobs.cli.COMMANDS))
def test_every_job_shows_its_defaults_in_its_help(command):
    parser = _parser(command)
    for action in parser._actions:
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings:
            assert "(default" in action.help, f"tempme {command} {action.option_strings[0]}"


def test_shared_options_are_one_definition_in_every_job():
    helps = {}
    for command in jobs.cli.COMMANDS:
        for action in _parser(command)._actions:
            if action.dest in ("ray_address", "tracking_uri"):
                helps.setdefault(action.dest, set()).add(action.help)
    assert helps.keys() == {"ray_address", "tracking_uri"}
    assert all(len(texts) == 1 for texts in helps.values()), helps


@dataclasses.dataclass
class _Record(ClusterOptions, TrackingOptions):
    folder: str = option(help="where", positional=True)
    names: tuple[str, ...] | None = option(None, "comma-separated", parse=comma_list)
    every: list[str] = option(help="repeatable", repeat=True, default_factory=list)
    since: dt.timedelta = option(dt.timedelta(days=1), "how long", parse=lambda s: dt.timedelta(days=int(s)))
    quiet: bool = option(False, "a switch")
    size: int = option(3, "a number", names=("-s",))
    hidden: int = 7


def test_a_record_parses_into_itself():
    parser = argparse.ArgumentParser()
    add_options(parser, _Record)
    got = from_args(_Record, parser.parse_args(["out", "--names", "a,,b", "--every", "x", "--every", "y",
                                                "--since", "3", "--quiet", "-s", "5", "--ray-address", "auto"]))
    assert got == _Record(folder="out", names=("a", "b"), every=["x", "y"], since=dt.timedelta(days=3),
                          quiet=True, size=5, ray_address="auto")
    assert from_args(_Record, parser.parse_args(["out"])) == _Record(folder="out")
    assert "--hidden" not in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args([])                  # the positional without a default is required
