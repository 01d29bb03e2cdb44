"""Run any job on a Ray cluster through Ray's job submission API, and follow it to the end.

The job's code travels as the runtime environment's working_dir (this checkout, minus what is not code),
its extra packages as `pip`. Clusters started by Ray 2.5x+ with token authentication (the default for
local clusters) answer 401 without a token: the client sends `Authorization: Bearer <token>` itself,
from an explicit token, RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (where
`ray start` and `ray get-auth-token --generate` keep it) — whichever comes first.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tempme.errors import UserError

# Never uploaded with the working_dir: environments, VCS data, run outputs (Ray also honours .gitignore).
WORKING_DIR_EXCLUDES = [".git", ".venv", "**/__pycache__", "*.egg-info", "mlruns", "mlartifacts", "mlflow.db",
                        "outputs", "demo_out", ".pytest_cache"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(UserError):
    pass


def find_token(explicit: str | None = None) -> str | None:
    """The cluster's auth token from the first source that has one (see the module docstring)."""
    if explicit:
        return explicit
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), Path.home() / ".ray" / "auth_token"):
        if path and Path(path).is_file():
            return Path(path).read_text().strip() or None
    return None


def connect(address: str, token: str | None = None):
    """A JobSubmissionClient for the dashboard at `address` (http://HEAD:8265), authenticated if a token exists."""
    from ray.job_submission import JobSubmissionClient

    token = find_token(token)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as e:  # the client raises bare ConnectionError / RuntimeError with the HTTP body
        hint = "" if token else " (no auth token found: pass --token or set RAY_AUTH_TOKEN)"
        raise SubmitError(f"cannot reach the Ray job API at {address}: {e}{hint}") from e


def runtime_env(working_dir: str | os.PathLike, pip: Sequence[str] = (),
                env_vars: Mapping[str, str] | None = None) -> dict:
    env: dict = {"working_dir": str(working_dir), "excludes": list(WORKING_DIR_EXCLUDES)}
    if pip:
        env["pip"] = list(pip)
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def submit(client, entrypoint: str, env: dict, submission_id: str | None = None,
           metadata: Mapping[str, str] | None = None) -> str:
    """Submit `entrypoint` (a shell command run on the head, in the working_dir); returns the submission id."""
    try:
        return client.submit_job(entrypoint=entrypoint, runtime_env=env, submission_id=submission_id,
                                 metadata=dict(metadata or {}))
    except Exception as e:
        raise SubmitError(f"the cluster at {client.get_address()} refused the job {entrypoint!r}: {e}") from e


def follow(client, submission_id: str, write: Callable[[str], None] = print) -> str:
    """Stream the job's logs until it ends; returns its final status (SUCCEEDED, FAILED or STOPPED)."""
    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            write(chunk.rstrip("\n"))

    asyncio.run(tail())
    return wait(client, submission_id)


def wait(client, submission_id: str, timeout_s: float = 3600.0, poll_s: float = 1.0) -> str:
    """Poll until the job reaches a terminal status; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(submission_id).value)
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise SubmitError(f"job {submission_id} still {status} after {timeout_s:.0f}s")
        time.sleep(poll_s)
