"""The search service's options: what each replica serves (`ServeOptions`, handed to every replica) and how
the service is deployed (`ServiceOptions`); `tempme serve` turns both into flags."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.options import ClusterOptions, TrackingOptions, option, precision_option
from pipelines.serve.ingress import INGRESS_ENV
from tempme.errors import UserError

DEFAULT_PORT = 8000


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
