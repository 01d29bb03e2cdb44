"""The search service: a Ray Serve application over an embedding index (see `app`), and `run_service`, what
`tempme serve` and the demo start."""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable

from pipelines.cluster.connect import connect, spans_nodes
from pipelines.serve import ingress
from pipelines.serve.options import ServeOptions, ServiceOptions
from pipelines.serve.state import MAX_K, MAX_QUERY_CHARS, BadQuery, SearchState, Unavailable, parse_query
from pipelines.storage.location import Location
from pipelines.tracking import resolve_tracking_uri

APP_NAME = "tempme-search"
__all__ = ["APP_NAME", "MAX_K", "MAX_QUERY_CHARS", "BadQuery", "SearchState", "ServeOptions", "ServiceOptions",
           "Unavailable", "parse_query", "start_service", "stop_service", "run_service"]


def start_service(options: ServeOptions, service: ServiceOptions | None = None, ready_timeout_s: float = 300.0
                  ) -> str:
    """Deploy the application on Ray (this process's, else `service.ray_address`, else a local one), listening
    on `service.host:port` through `service.ingress`, and wait until every replica has started; returns the
    service's address."""

    import ray
    from ray import serve

    from pipelines.serve.app import build

    # Replicas run in other processes and folders: give them absolute places.
    options = dataclasses.replace(options, index=Location.of(options.index).uri,
                                  tracking_uri=resolve_tracking_uri(options.tracking_uri))
    service = service or ServiceOptions()
    if service.ray_address == "local" or not (ray.is_initialized() or service.ray_address
                                               or os.environ.get("RAY_ADDRESS")):
        ingress.check_here(service.ingress)      # Ray starts on this machine, and Serve's HAProxy with it
    connect(service.ray_address)
    ingress.check_host(service.ingress, service.host, spans_nodes(ray.nodes()))
    logging_config = _serve_logging()
    serve.start(http_options={"host": service.host, "port": service.port}, logging_config=logging_config,
                controller_options=ingress.controller_options(service.ingress))
    serve.run(build({**vars(options), "replicas": service.replicas, "replica_cpus": service.replica_cpus}),
              name=APP_NAME, route_prefix="/",
              blocking=False, logging_config=logging_config)
    address = f"http://{service.host}:{service.port}/"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == "RUNNING":
            return address
        if status is not None and status.status == "DEPLOY_FAILED" or time.monotonic() > deadline:
            raise RuntimeError(f"the search service did not start: {status.message if status else 'no status'}")
        time.sleep(0.5)


def stop_service() -> None:
    """Take the application down, then Serve: the replicas drain first (30 s behind HAProxy), which a bare
    `serve.shutdown()` does not wait for (it gives up on the controller after 30 s), and a next
    `start_service` starts a new Serve, with its own ingress."""
    from ray import serve

    serve.delete(APP_NAME)
    serve.shutdown()


def _serve_logging() -> dict:
    """Serve logs as loud as this process's root logger lets through: a quiet job (`jobs.output`) gets Serve's
    warnings only, from its driver-side logger (which importing Serve set to INFO) and its components
    (controller, proxy, replicas), and no access log; --verbose gets everything."""
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        return {"log_level": "INFO"}
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    return {"log_level": "WARNING", "enable_access_log": False}


def run_service(options: ServeOptions, service: ServiceOptions | None = None, say: Callable[[str], None] = print
                ) -> None:
    """`start_service`, say where it is, and keep it up until Ctrl-C (or SIGTERM); then take it down."""
    address = start_service(options, service)
    try:
        with urllib.request.urlopen(address + "healthz", timeout=30) as reply:
            say(f"search service at {address} ({reply.read().decode()}); Ctrl-C stops it")
    except OSError as err:    # a 503: the index is not there yet; the service is up and keeps looking
        say(f"search service at {address}, index not available yet ({err}); Ctrl-C stops it")
    stop = threading.Event()
    # Our own handlers: libraries used before (Ray Train's driver, for one) may have replaced Python's.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
        say("stopping the search service")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_service()
