"""`tempme submit` against a real Ray head started here (its own ports, temp dir and auth token)."""
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.nightly import DEFAULT_MODEL
from tests.fixtures.servers import free_ports

REPO = Path(__file__).resolve().parents[2]
PORT_FLAGS = ["--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
              "--node-manager-port", "--object-manager-port"]



@pytest.fixture(scope="module")
def ray_head():
    """(dashboard address, token) of a one-CPU Ray head with token auth; only its own processes are stopped."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")          # short: Ray's socket paths must stay < 108 chars
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus=1",
               "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={temp}",
               "--disable-usage-stats", *(f"{flag}={port}" for flag, port in ports.items())]
    head = subprocess.Popen(command, env=env, cwd=temp, start_new_session=True,
                            stdout=open(f"{temp}/head.log", "w"), stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert head.poll() is None, Path(f"{temp}/head.log").read_text()[-3000:]
            request = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Ray head at {address} did not come up")
                time.sleep(0.5)
        yield address, token
    finally:
        os.killpg(head.pid, signal.SIGTERM)      # the process group we started, nothing else
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # stragglers (workers, gcs) that ignored SIGTERM
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def working_dir(tmp_path_factory):
    """Just the code, so the upload is small whatever else lies in the checkout."""
    root = tmp_path_factory.mktemp("code")
    for package in ("jobs", "pipelines", "tempme"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_submit_runs_a_job_on_the_cluster_and_follows_its_logs(ray_head, working_dir, capsys):
    """The job's printed cron line spells out MLFLOW_TRACKING_URI as it found it: set only by --env."""
    address, token = ray_head
    status = main(["submit", "nightly", "--address", address, "--token", token, "--follow",
                   "--working-dir", str(working_dir), "--env", "MLFLOW_TRACKING_URI=http://from-submit:5000",
                   "--", "--print-cron", "--shards", "/corpus/shards", "--out", "/corpus/index"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "python -m jobs.nightly --print-cron" in out
    cron = next(line for line in out.splitlines() if line.startswith("0 2 * * *"))
    assert f"--shards /corpus/shards --out /corpus/index --model {DEFAULT_MODEL}" in cron
    assert "--tracking-uri http://from-submit:5000" in cron
    assert "SUCCEEDED" in out


def test_a_failing_job_fails_the_command(ray_head, working_dir, capsys):
    address, token = ray_head
    status = main(["submit", "--address", address, "--token", token, "--follow", "--working-dir", str(working_dir),
                   "nightly"])          # no --shards/--out: the job exits 2 on the cluster
    out = capsys.readouterr().out
    assert status == 1
    assert "missing --shards, --out" in out and "FAILED" in out


def test_without_the_right_token_the_error_says_so(ray_head, working_dir, capsys):
    address, _ = ray_head
    assert main(["submit", "nightly", "--address", address, "--token", "not-the-token", "--working-dir",
                 str(working_dir), "--", "--print-cron"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempme submit: ") and address in err
    assert re.search("401|403|[Aa]uth", err), err


def test_an_unreachable_head_is_named(capsys):
    (port,) = free_ports(1)
    address = f"http://127.0.0.1:{port}"
    assert main(["submit", "nightly", "--address", address, "--token", "t", "--", "--print-cron"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempme submit: ") and address in err


def test_an_env_option_without_equals_is_named_before_contacting_anyone(capsys):
    assert main(["submit", "nightly", "--address", "http://127.0.0.1:9", "--env", "A=1", "--env", "TEMPME_MARK",
                 "--", "--print-cron"]) == 2
    err = capsys.readouterr().err
    assert "--env 'TEMPME_MARK'" in err and "KEY=VALUE" in err and "127.0.0.1:9" not in err


def test_unknown_job_is_refused_before_contacting_anyone(capsys):
    assert main(["submit", "nonsense", "--address", "http://127.0.0.1:9"]) == 2
    assert "unknown job 'nonsense'" in capsys.readouterr().err
