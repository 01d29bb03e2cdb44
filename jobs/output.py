"""What a job prints: its own progress lines and summary, without the libraries' chatter (unless --verbose).

The chatter comes from Ray (start-up, token authentication, Ray Train's, Ray Data's and Ray Serve's INFO logs,
the model-building INFO lines of open_clip that Ray Train's worker logging lets through), MLflow (database
set-up, "Downloading artifacts" bars, "Successfully registered") and a few warnings about our own deliberate
choices. Python logging quiets it in this process; environment variables quiet it in the processes a local Ray
starts from here, and the RAY_TRAIN_* ones are handed by Ray Train to its controller and workers on any
cluster; Serve's components follow this process's level (`pipelines.serve`). Our stages' lines still come
through: preprocessing and embedding log from this process under `pipelines`, training prints from rank 0 of
its workers (on stderr, which Ray forwards).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

# Environment of a quiet job; a variable already set is left as the person set it.
QUIET_ENV = {
    "RAY_LOGGER_LEVEL": "warning",        # the `ray` logger of ray.init and of the workers it starts
    "RAY_DATA_LOG_LEVEL": "ERROR",        # "progress bars disabled" (the job prints its own line), tuning advice
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0",   # Ray Train's INFO lines and, in its workers,
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",       # a root logger at INFO (open_clip's chatter)
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# Loggers of libraries already imported when the job starts (the variables above cover later imports).
QUIET_LOGGERS = {"ray": logging.WARNING, "ray.data": logging.ERROR, "ray.train": logging.WARNING,
                 "ray._private.authentication": logging.ERROR,   # "token authentication is enabled"
                 "mlflow": logging.WARNING, "alembic": logging.WARNING, "open_clip": logging.WARNING,
                 "urllib3": logging.WARNING, "filelock": logging.WARNING}
HANDLER = "tempme"   # the name of our stderr handler, so that a second call does not add another


class _ToStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (pytest swaps it between tests)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


class _Plain(logging.Formatter):
    """Our INFO lines as they are; anything louder says how loud and where from."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()} ({record.name}): {text}"


def configure_output(verbose: bool) -> None:
    """Set up logging for a job run from the command line: quiet libraries, or (`verbose`) the libraries'
    logs as they come, with our own INFO lines among them."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")   # no colour codes in a captured log
    root = logging.getLogger()
    if not any(h.name == HANDLER for h in root.handlers):
        handler = _ToStderr()
        handler.name = HANDLER
        handler.setFormatter(_Plain("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("pipelines").setLevel(logging.INFO)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # lance warns before every fork (starting Ray, data-loader workers); none of those children opens a dataset.
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
