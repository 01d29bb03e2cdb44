"""MLflow logging and progress lines from inside Ray Train workers: rank 0 logs, every other rank holds a logger
that does nothing."""
from __future__ import annotations

import sys
from pathlib import Path

from pipelines.tracking import activate_run


class RunLogger:
    """Logs to the job's MLflow run (with system metrics) when `enabled`; a no-op otherwise."""

    def __init__(self, enabled: bool, run_id: str, tracking_uri: str, system_metrics_interval_s: float | None):
        """`system_metrics_interval_s`: sample system metrics this often (None: none)."""
        self.enabled = enabled
        self._run_id, self._uri, self._interval = run_id, tracking_uri, system_metrics_interval_s
        self._run = None

    def __enter__(self) -> RunLogger:
        if self.enabled:
            if self._interval is not None:
                import mlflow

                mlflow.set_system_metrics_sampling_interval(self._interval)
            self._run = activate_run(self._run_id, self._uri, system_metrics=self._interval is not None)
            self._run.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._run is not None:
            self._run.__exit__(*exc)
            self._run = None

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def say(self, line: str) -> None:
        """Print a line for the person running the job: Ray forwards a worker's stderr to the driver."""
        if self.enabled:
            print(line, file=sys.stderr, flush=True)

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            (mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact)(str(path), artifact_path)

    def text(self, text: str, artifact_file: str) -> None:
        """A text artifact of the run (written again whole when it grows)."""
        if self.enabled:
            import mlflow

            mlflow.log_text(text, artifact_file)

    def tags(self, values: dict[str, str]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags(values)
