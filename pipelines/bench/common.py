"""What every benchmark shares: the `--json` and `--workdir` options, its scratch folder, a quiet local Ray,
comma-separated options, aligned tables and the machine a result was measured on; `run` measures and prints."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace

from tempme.errors import UserError


def job(name: str) -> SimpleNamespace:
    """`pipelines.bench.<name>` as the `tempme` command runs a job: `add_arguments(parser)` and `run(args)`."""
    module = importlib.import_module(f"pipelines.bench.{name}")
    return SimpleNamespace(add_arguments=lambda parser: add_arguments(parser, module),
                           run=lambda args: run(module, args))


def add_arguments(parser: argparse.ArgumentParser, module: ModuleType) -> None:
    """The module's own options, then the shared ones, and its example as the help's epilog."""
    module.add_arguments(parser)
    if module.WORKDIR:
        parser.add_argument("--workdir", help=f"where {module.WORKDIR} are written (default: a temporary folder, "
                                              "removed afterwards)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.epilog = f"Example: {module.EXAMPLE}"


def run(module: ModuleType, args: argparse.Namespace) -> int:
    """Measure, then print the result as JSON (`--json`) or as the module's table and the machine's line. Under
    `--json`, what libraries print to stdout while measuring (Ray's notes from its raylets) goes to stderr, so
    stdout is the JSON alone."""
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = {**module.measure(args), "machine": machine()}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        m = result["machine"]
        print(f"{module.render(result)}\n{m['cpus']} CPUs, load average {m['load_average']:.1f}")
    return 0


def machine() -> dict:
    """What a figure depends on beyond the code: the CPUs and how busy they were (1-minute load average)."""
    return {"cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2)}


def progress(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a long benchmark reports how far it got: stdout for a person, nowhere under `--json`."""
    return (lambda line: None) if args.json else (lambda line: print(line, flush=True))


@contextlib.contextmanager
def scratch(args: argparse.Namespace) -> Iterator[Path]:
    """The benchmark's folder: `--workdir`, kept afterwards, or a temporary folder removed afterwards."""
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        yield Path(args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="tempme-bench-") as folder:
            yield Path(folder)


def start_ray(num_cpus: int | None = None) -> None:
    """A quiet local Ray of `num_cpus` CPUs (None: all), unless Ray is up already (a test's cluster, a caller's)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")


def numbers(text: str, option: str, kind: type = int, sep: str = ",", least: int = 1,
            most: int | None = None) -> list:
    """The numbers of an option such as `--workers 1,2`, between `least` and `most` of them ("" is none)."""
    words = [w.strip() for w in text.split(sep) if w.strip()]
    try:
        values = [kind(w) for w in words]
    except ValueError:
        raise UserError(f"{option} {text!r} is not a list of {kind.__name__} numbers separated by {sep!r}") from None
    if len(values) < least or most is not None and len(values) > most:
        wanted = f"{least}" if least == most else f"at least {least}" if most is None else f"{least} to {most}"
        raise UserError(f"{option} {text!r} has {len(values)} numbers; it takes {wanted}, separated by {sep!r}")
    return values


def names(text: str, option: str, allowed: Sequence[str] | None = None) -> list[str]:
    """The comma-separated names of an option such as `--modes eager,folded`: at least one, each `allowed`."""
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in chosen if allowed is not None and w not in allowed]
    if not chosen:
        raise UserError(f"{option} {text!r}: no name given")
    if bad:
        raise UserError(f"{option} {text!r}: {', '.join(bad)} not among {', '.join(allowed)}")
    return chosen


def table(header: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """Rows under a header, each column as wide as its widest cell: the first `left` columns (labels) aligned
    left, the rest (figures, formatted by the caller) right; None is shown as "-"."""
    cells = [["-" if c is None else str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in cells)
