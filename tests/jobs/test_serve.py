"""`tempme serve` as its users start it: a process that says where the service is, answers there, and stops
cleanly on Ctrl-C, printing its own lines only; bad flags are refused before anything starts."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from jobs.cli import main
from tests.fixtures.servers import free_port


@pytest.mark.slow
def test_serve_answers_where_it_says_and_stops_on_ctrl_c(trained_index, tmp_path):
    index, _, uri = trained_index
    port = free_port()
    command = [sys.executable, "-m", "jobs.serve", "--index", str(index), "--tracking-uri", uri, "--port", str(port),
               "--ray-address", "local"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=tmp_path, start_new_session=True)
    try:
        deadline, lines = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("search service at"):
                break
        assert lines and lines[-1].startswith(f"search service at http://127.0.0.1:{port}/"), "".join(lines[-20:])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as reply:
            assert json.loads(reply.read())["videos"] == 16
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=120)[0]
        assert process.returncode == 0 and "stopping the search service" in rest
        # Only the job's own lines: no Serve INFO logs or access log, no Ray warnings. Left: the raylet's note
        # that Serve's controller was killed while its graceful_shutdown ran (Serve's own shutdown path).
        noise = [line for line in lines + rest.splitlines()
                 if re.search(r"\bINFO\b|WARNING|\(raylet\)|core_worker|GET /healthz", line)
                 and "ServeController.graceful_shutdown" not in line]
        assert noise == [], noise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("flag", [["--replicas", "0"], ["--port", "0"], ["--refresh-s", "0"]])
def test_bad_flags_are_refused(flag, tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path), *flag]) == 2
    assert "tempme serve:" in capsys.readouterr().err
