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

import psutil
import pytest

from jobs.cli import main
from pipelines.serve import ServiceOptions
from tempme.errors import UserError
from tests.fixtures.ray_fixtures import serve_on_loopback_env
from tests.fixtures.servers import free_port


def listeners() -> dict[tuple[str, int], str]:
    """(address, port) -> the name of the process listening there, for this user's TCP listeners."""
    return {(c.laddr.ip, c.laddr.port): psutil.Process(c.pid).name() for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.pid}


@pytest.mark.slow
@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_serve_answers_where_it_says_and_stops_on_ctrl_c(ingress, trained_index, tmp_path):
    index, _, uri = trained_index
    port = free_port()
    command = [sys.executable, "-m", "jobs.serve", "--index", str(index), "--tracking-uri", uri, "--port", str(port),
               "--ray-address", "local", "--ingress", ingress]
    env = {**os.environ, "RAY_ADDRESS": "", **serve_on_loopback_env()}     # the started Ray's nodes inherit it
    before = set(listeners())
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
        opened = {where: name for where, name in listeners().items() if where not in before}
        # the service's port is HAProxy's or Serve's proxy actor's, as asked
        assert (opened[("127.0.0.1", port)] == "haproxy") == (ingress == "haproxy"), opened
        # HAProxy listens on the loopback only, its stats and metrics too (`haproxy_on_loopback`)
        assert all(ip == "127.0.0.1" for (ip, _), name in opened.items() if name == "haproxy"), opened
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=120)[0]
        assert process.returncode == 0 and "stopping the search service" in rest
        # Only the job's own lines: no Serve INFO logs or access log, no Ray warnings. Left: the raylet's note
        # that Serve's controller was killed while its graceful_shutdown ran (Serve's own shutdown path), and
        # Serve's warning, with HAProxy, that replicas listening on 127.0.0.1 take no requests from other nodes
        # (this is one; `tempme serve` refuses 127.0.0.1 on several).
        noise = [line for line in lines + rest.splitlines()
                 if re.search(r"\bINFO\b|WARNING|\(raylet\)|core_worker|GET /healthz", line)
                 and "ServeController.graceful_shutdown" not in line and "cross-node routing will fail" not in line]
        assert noise == [], noise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("flag", [["--replicas", "0"], ["--port", "0"], ["--refresh-s", "0"]])
def test_bad_flags_are_refused(flag, tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path), *flag]) == 2
    assert "tempme serve:" in capsys.readouterr().err


def test_haproxy_is_asked_for_where_there_is_none(monkeypatch):
    import importlib.util
    import shutil

    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    ServiceOptions(ingress="proxy").check_ingress_here()
    with pytest.raises(UserError, match="--ingress must be one of haproxy, proxy, got 'nginx'"):
        ServiceOptions(ingress="nginx")
    with pytest.raises(UserError, match="use --ingress proxy"):
        ServiceOptions().check_ingress_here()
