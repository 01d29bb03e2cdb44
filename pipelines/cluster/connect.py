"""Joining the Ray cluster, and what a stage needs to know of it (Ray is imported only where it is used).

`connect` hands the workers the driver's object-store settings that are not secrets (endpoint, region), so
that a node started without them reads and writes the same store as the driver; credentials stay the
nodes' own (instance roles, the cluster's environment). `check_stores_from_a_worker` then proves that a
worker reaches every store the job uses, before any work: a node that cannot is one message, not a failure
row for every video.
"""
from __future__ import annotations

import os

from pipelines.storage.location import Location, StoreError

# Object-store settings a worker needs to reach the driver's store; never credentials.
STORE_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
WORKER_CHECK_TIMEOUT_S = 600.0    # an autoscaler may have to start the first worker node


def store_settings() -> dict[str, str]:
    return {name: os.environ[name] for name in STORE_SETTINGS if os.environ.get(name)}


def connect(address: str | None) -> None:
    """Join (or start) Ray once per process, with the store settings in the job's runtime environment."""
    import ray

    if not ray.is_initialized():
        settings = store_settings()
        ray.init(address=address, runtime_env={"env_vars": settings} if settings else None)


def check_stores_from_a_worker(places: list[tuple[str, str]]) -> None:
    """Raise StoreError if a worker (a task needing one CPU) cannot use one of `places` ((what, URI) pairs)."""
    import ray

    remote = [(what, uri) for what, uri in places if "://" in uri and not uri.startswith("file://")]
    if not remote:
        return
    ref = ray.remote(num_cpus=1, max_retries=3)(_check_here).remote(remote)
    try:
        node, problem = ray.get(ref, timeout=WORKER_CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise StoreError(f"no worker could start in {WORKER_CHECK_TIMEOUT_S:.0f} s to check the object store "
                         "(does the cluster have, or can it add, a node with a free CPU?)") from None
    if problem:
        raise StoreError(f"{problem}. The driver reaches it but the worker on node {node} does not: the job "
                         f"passes the workers {', '.join(STORE_SETTINGS)} where set (here: "
                         f"{', '.join(store_settings()) or 'none'}), credentials must be the nodes' own")


def _check_here(places: list[tuple[str, str]]) -> tuple[str, str]:
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        for what, uri in places:
            Location.of(uri).check_usable(what)
    except (StoreError, OSError) as e:
        return node, str(e)
    return node, ""


def spans_nodes(nodes: list[dict]) -> bool:
    """Whether work will run on more than one machine: several live nodes, or a head that offers no CPU (its
    workers come from an autoscaler)."""
    alive = [n for n in nodes if n.get("Alive")]
    return len(alive) > 1 or any(n.get("Resources", {}).get("CPU", 0) == 0 for n in alive)
