"""Options records: a job's options are one dataclass whose fields carry their command-line help, so the
defaults, the flags, the --help text and the keywords of the job's function all come from one definition
(`jobs.options` builds the flags). The options that several jobs share are defined here, once."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tempme.config import DEFAULT_PRECISION, PRECISIONS


def option(default=dataclasses.MISSING, help: str = "", *, default_factory=dataclasses.MISSING, **flag):
    """A field with its help and argparse extras as metadata: `choices`, `names` (more flag names, e.g. "-k"),
    `positional`, `nargs`, `repeat` (once per value), `parse` (text -> value), `metavar`, `group` (a heading in
    --help). A field without a default is a required option."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help, **flag})


def comma_list(text: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def precision_option(what: str = "inference precision"):
    """The precision option of a job that runs the model (`what` names what runs)."""
    return option(DEFAULT_PRECISION, f"{what}; auto: bf16 where the CPU or GPU computes it natively",
                  choices=PRECISIONS)


@dataclass(kw_only=True)
class ClusterOptions:
    """Of every job that runs on Ray."""

    ray_address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, else a local one)")


@dataclass(kw_only=True)
class TrackingOptions:
    """Of every job that reads models from, or logs to, MLflow."""

    tracking_uri: str | None = option(None, "MLflow tracking URI, also for models:/ and runs:/ URIs "
                                            "(default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
