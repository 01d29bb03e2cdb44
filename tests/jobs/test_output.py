"""The command line's output set-up: quiet libraries by default, their logs as they come with --verbose."""
import logging
import os

import pytest

from jobs.cli import build_parser
from jobs.output import HANDLER, QUIET_ENV, QUIET_LOGGERS, configure_output

LIBRARIES = ("open_clip", "ray", "ray.data", "ray.train", "mlflow")


@pytest.fixture
def clean_logging(monkeypatch):
    """A process whose libraries log at INFO and no quiet variables set; everything put back afterwards."""
    for name in [*QUIET_ENV, "RAY_COLOR_PREFIX"]:
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    names = ["pipelines", *QUIET_LOGGERS]
    saved = root.level, list(root.handlers), {n: logging.getLogger(n).level for n in names}
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_quiet_by_default_and_twice_is_once(clean_logging):
    configure_output(verbose=False)
    configure_output(verbose=False)

    for name in LIBRARIES:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    assert logging.getLogger("pipelines.embed.job").isEnabledFor(logging.INFO)     # our progress lines
    assert [h.name for h in logging.getLogger().handlers].count(HANDLER) == 1
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ["RAY_LOGGER_LEVEL"] == "warning"


def test_a_variable_the_person_set_wins(clean_logging, monkeypatch):
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")
    configure_output(verbose=False)
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"


def test_verbose_leaves_the_libraries_alone(clean_logging):
    configure_output(verbose=True)

    for name in LIBRARIES:
        assert logging.getLogger(name).level == logging.INFO, name
    assert not set(QUIET_ENV) & set(os.environ)


@pytest.mark.parametrize("argv, verbose", [
    (["flops", "--preset", "x"], False),
    (["--verbose", "flops", "--preset", "x"], True),
    (["flops", "--preset", "x", "--verbose"], True),
])
def test_verbose_goes_before_or_after_the_subcommand(argv, verbose):
    assert build_parser(argv).parse_args(argv).verbose is verbose
