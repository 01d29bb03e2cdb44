"""MLflow setup shared by the jobs: where runs go, whether that place answers, and one run per job name.

The embedded default is a SQLite store, `mlflow.db` in the working directory, with artifacts in the folder
`mlartifacts` beside it; a server (`http://...`) is used when the config or `MLFLOW_TRACKING_URI` names one.
URIs are made absolute, so Ray workers, whatever their working directory, log to the same place. A job asks
`check_reachable` before it starts any work, so a server that is down is one clear error, not a hang inside a
worker an hour later. A job that restarts finds its run again by name (`start_or_resume_run`).
"""
from __future__ import annotations

import fcntl
import os
import urllib.error
import urllib.request
from pathlib import Path

from tempme.errors import UserError

DEFAULT_DB = "mlflow.db"
ARTIFACT_FOLDER = "mlartifacts"


class TrackingUnavailable(UserError):
    """The tracking store cannot be used; the message says which URI and why."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`uri` if given, else `$MLFLOW_TRACKING_URI`, else the SQLite default; SQLite paths made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not path.startswith("/"):
            uri = f"sqlite:///{(Path.cwd() / path).resolve()}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise TrackingUnavailable unless the store at `uri` answers (servers) or can be created (SQLite)."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status == 200:
                    return
                problem = f"HTTP {response.status} from {url}"
        except (urllib.error.URLError, OSError) as err:
            problem = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({problem}); start it, or point tracking.uri / "
            f"MLFLOW_TRACKING_URI at a running server (unset both for the local SQLite store)")
    db = _sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
            raise TrackingUnavailable(f"MLflow SQLite store {uri}: folder {db.parent} is missing or not writable")
        _create_sqlite_store(db, uri)
        return
    try:
        import mlflow

        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # any store-specific failure means the same thing to the job
        raise TrackingUnavailable(f"MLflow tracking store {uri} cannot be used: {err}") from err


def _create_sqlite_store(db: Path, uri: str) -> None:
    """Create the SQLite store's tables under a file lock: two jobs started at once on a fresh store would
    otherwise both run MLflow's schema creation, and the second dies half-way."""

    import mlflow

    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go in a folder beside the database; a server chooses its own."""
    db = _sqlite_path(uri)
    return (db.parent / ARTIFACT_FOLDER).as_uri() if db is not None else None


def get_or_create_experiment(name: str, uri: str) -> str:
    """The id of experiment `name`, created if missing."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(uri))
    except mlflow.MlflowException:      # another job created it a moment ago
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def find_run(run_name: str, experiment_id: str, uri: str) -> str | None:
    """The id of the newest live run called `run_name` in the experiment, if any."""
    import mlflow

    escaped = run_name.replace("'", "\\'")
    runs = mlflow.MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"attributes.run_name = '{escaped}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def start_or_resume_run(run_name: str, experiment: str, uri: str, tags: dict[str, str] | None = None,
                        resume_finished: bool = True) -> tuple[str, bool]:
    """(run id, resumed): the existing run called `run_name`, or a new one. Nothing is made active.

    With `resume_finished=False` the newest run of that name is resumed only if it did not finish (it was
    killed or failed), else a new run starts: for a job run again and again under one name (nightly)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = get_or_create_experiment(experiment, uri)
    run_id = find_run(run_name, experiment_id, uri)
    if run_id is not None and (resume_finished or client.get_run(run_id).info.status != "FINISHED"):
        return run_id, True
    run = client.create_run(experiment_id, run_name=run_name, tags=tags or {})
    return run.info.run_id, False


def activate_run(run_id: str, uri: str, system_metrics: bool = False):
    """Make `run_id` the active run of this process (a context manager that ends it when left)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)


def use_store(uri: str | None = None) -> str:
    """Make the store at `uri` (resolved as `resolve_tracking_uri` does) MLflow's current one once it answers;
    returns its URI. What every job does before it reads the registry."""
    import mlflow

    store = resolve_tracking_uri(uri)
    check_reachable(store)
    mlflow.set_tracking_uri(store)
    return store
