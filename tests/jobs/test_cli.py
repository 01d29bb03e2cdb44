"""The front door: every subcommand's help has an example; the README's commands are the ones CI runs."""
import re
import runpy
import sys
from pathlib import Path

import pytest

from jobs.cli import BENCHMARKS, COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = [[c] for c in COMMANDS] + [["bench", b] for b in BENCHMARKS]


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["bench"], *SUBCOMMANDS], ids=lambda a: " ".join(a) or "tempme")
def test_help_says_what_and_shows_an_example(argv, capsys):
    text = _help(argv, capsys)
    assert re.search(r"Examples?:\s+tempme " + " ".join(argv), text), text


def test_every_job_module_runs_on_its_own_for_ray_job_submit():
    for module, _ in COMMANDS.values():
        source = (ROOT / "jobs" / f"{module}.py").read_text()
        assert 'if __name__ == "__main__":' in source and "run_module(__name__)" in source, module


@pytest.mark.parametrize("what", BENCHMARKS)
def test_every_benchmark_runs_on_its_own_as_python_m_jobs_bench(what, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["jobs/bench.py", what, "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("jobs.bench", run_name="__main__")
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert f"Example: tempme bench {what}" in text and "--json" in text, text


def _readme_commands() -> list[str]:
    """Shell lines of the README's 'Two commands' section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", section, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_readme_commands_are_what_ci_and_the_makefile_run():
    commands = _readme_commands()
    assert commands == ["make demo", "make test"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}: env\b", makefile, flags=re.M), target
    assert "tempme demo" in makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "pytest -q tests" in makefile.split("\ntest:", 1)[1]


@pytest.mark.parametrize("argv, message", [
    (["flops", "--preset", "nope"], "unknown preset 'nope'"),
    (["search", "--index", "/nonexistent/index", "-k", "0", "a dog"], "-k must be at least 1"),
    (["train", "--config", "/nonexistent/run.yaml"], "/nonexistent/run.yaml"),
    (["embed", "--shards", "/x", "--model", "/nonexistent/adapter", "--out", "/x", "--precision", "fp32",
      "--workers", "0"], "workers, batch_size and cpus_per_worker must be at least 1"),
], ids=lambda v: v[0] if isinstance(v, list) else "")
def test_a_user_mistake_is_one_line_and_exit_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tempme {argv[0]}: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err
