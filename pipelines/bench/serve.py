"""The search service under load: queries per second and p50/p99 latency over HTTP at each index size and
replica count, and the seconds from a newly published index version to its being served.

The index holds synthetic vectors (`pipelines.bench.search`) recorded as embedded by a random-weight tiny
model, whose text encoder then encodes the queries for real, so each request pays what a real one pays:
HTTP, the text encoder, the search and the JSON. The load generator runs `clients` threads on 127.0.0.1 for
at most `seconds` and `max_requests`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from pipelines.bench import common
from pipelines.bench.search import build, corpus
from pipelines.model.registry import build_model, resolve_model

WORKDIR = "the model and the indexes"
EXAMPLE = "tempme bench serve --sizes 100000 --replicas 1,2 --seconds 10 --json"
FOLLOW_LIMIT_S = 600.0   # how long a published version may take to be served before the bench gives up
QUERIES = ("a red square moving left", "a man is cooking", "two dogs play in the snow", "a blue bar moving up",
           "someone explains a diagram", "cars on a highway at night", "a cat jumps on a table")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="100000,1000000", help="videos in the synthetic indexes (default "
                                                                  "%(default)s)")
    parser.add_argument("--replicas", default="1,2", help="replica counts (default %(default)s)")
    parser.add_argument("--replica-cpus", default="1", help="CPUs (and torch threads) of each replica, "
                                                            "comma-separated (default %(default)s)")
    parser.add_argument("--model", default="tempme-tiny-12f",
                        help="model config whose text encoder (random weights) encodes the queries, e.g. "
                             "tempme-b32-12f for a real-size one (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=15.0, help="load per measurement, at most (default "
                                                                    "%(default)s)")
    parser.add_argument("--max-requests", type=int, default=5000, help="requests per measurement, at most")
    parser.add_argument("--ingress", default="haproxy,proxy",
                        help="how requests reach the replicas, comma-separated (default %(default)s)")
    parser.add_argument("--clients", default="8", help="concurrent clients, comma-separated (default %(default)s)")
    parser.add_argument("--port", type=int, default=8123, help="port on 127.0.0.1 (default %(default)s)")
    parser.add_argument("--refresh-s", type=float, default=10.0,
                        help="the service's look for new versions (default %(default)s, as `tempme serve`)")


def measure(args) -> dict:
    """Per index size: of the same queries as direct calls to a replica's search object (in a Ray actor of each
    replica CPU count), and over HTTP per ingress, replica count and CPUs, per client count: QPS, p50/p99, the
    replica's own time and batch; and the seconds from a publish to its being served."""
    from pipelines.index import IndexStore
    from pipelines.serve import ServeOptions, ServiceOptions, start_service, stop_service
    from pipelines.serve.ingress import INGRESS_ENV, check_here

    sizes, replica_counts = common.numbers(args.sizes, "--sizes"), common.numbers(args.replicas, "--replicas")
    clients = common.numbers(args.clients, "--clients")
    cpu_counts = common.numbers(args.replica_cpus, "--replica-cpus")
    ingresses = common.names(args.ingress, "--ingress", list(INGRESS_ENV))
    for ingress in ingresses:
        check_here(ingress)
    log = common.progress(args)
    rng = np.random.default_rng(0)
    rows, follow = [], []
    with common.scratch(args) as root:
        model, dim = bench_model(root, args.model)
        common.start_ray()
        for n in sizes:
            location = str(root / f"index-{n}")
            log(f"writing an index of {n} videos ...")
            build(location, n, corpus(rng, n, dim), rng, model)
            IndexStore(location).refresh_search()
            for cpus in cpu_counts:
                for measured in direct_in_replica_process(location, cpus, clients, args):
                    rows.append({"videos": n, "path": "in-process", "ingress": None, "replicas": None,
                                 "replica_cpus": cpus, **measured})
                    log(f"  {rows[-1]}")
            for ingress in ingresses:
                for replicas, cpus in [(r, c) for r in replica_counts for c in cpu_counts]:
                    address = start_service(ServeOptions(index=location, refresh_s=args.refresh_s),
                                            ServiceOptions(port=args.port, replicas=replicas, replica_cpus=cpus,
                                                           ingress=ingress))
                    for count in clients:
                        rows.append({"videos": n, "path": "HTTP", "ingress": ingress, "replicas": replicas,
                                     "replica_cpus": cpus, **warm_load(over_http(address), args, count)})
                        log(f"  {rows[-1]}")
                    if (ingress, replicas, cpus) == (ingresses[-1], replica_counts[-1], cpu_counts[-1]):
                        follow.append({"videos": n, "refresh_s": args.refresh_s,
                                       "publish_to_served_s": _follow(address, location, model, rng, dim)})
                        log(f"  {follow[-1]}")
                    stop_service()
    return {"model": args.model, "load": rows, "follow": follow}


def _follow(address: str, location: str, model, rng, dim: int) -> float | None:
    """Seconds from publishing a new version to its being served (None: not within FOLLOW_LIMIT_S)."""
    before = _version(address)
    started = time.perf_counter()
    _publish_one(location, model, rng, dim)
    while _version(address) == before and time.perf_counter() - started < FOLLOW_LIMIT_S:
        time.sleep(0.05)
    return round(time.perf_counter() - started, 2) if _version(address) != before else None


def render(result: dict) -> str:
    rows = [[r["videos"], r["path"] if r["path"] != "HTTP" else f"HTTP, {r['ingress']}", r["replicas"],
             r["replica_cpus"], r["clients"], r["qps"], r["p50_ms"], r["p99_ms"], r["took_p50_ms"], r["batch_mean"],
             r["errors"]] for r in result["load"]]
    lines = [f"queries encoded by {result['model']} (random weights); took: the replica's own time per batch",
             common.table(["videos", "path", "replicas", "CPUs each", "clients", "QPS", "p50 ms", "p99 ms",
                           "took p50 ms", "batch", "errors"], rows, left=2)]
    lines += [f"{f['videos']} videos: a published version served after {f['publish_to_served_s']} s "
              f"(the service looks every {f['refresh_s']} s)" if f["publish_to_served_s"] is not None else
              f"{f['videos']} videos: a published version was not served within {FOLLOW_LIMIT_S:.0f} s"
              for f in result["follow"]]
    return "\n".join(lines)


def bench_model(root: Path, config: str, seed: int = 0):
    """A random-weight model of `config` whose adapter differs by `seed` (as a version trained further would),
    logged as an adapter: (its ModelRef, its embedding width)."""
    import torch

    model = build_model(config)
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn(p.shape, generator=noise) * 1e-3)
        dim = model.encode_text([""]).shape[1]
    return resolve_model(str(model.save_adapter(root / config)))[0], dim


def over_http(address: str, k: int = 10):
    """The query as an HTTP client sends it: each client thread keeps its connection open between requests, as
    browsers and HTTP libraries' connection pools do (a lost connection is opened again on the next request)."""
    where = urllib.parse.urlsplit(address)
    connections = threading.local()

    def ask(query: str) -> dict:
        if getattr(connections, "open", None) is None:
            connections.open = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        try:
            connections.open.request("GET", f"{where.path}search?q={urllib.parse.quote(query)}&k={k}")
            reply = connections.open.getresponse()
            body = reply.read()
        except (OSError, http.client.HTTPException) as err:
            connections.open.close()
            connections.open = None
            raise OSError(f"{address}: {err}") from err
        if reply.status != 200:
            raise OSError(f"{address}: HTTP {reply.status}")
        return json.loads(body)
    return ask


def direct(state, k: int = 10):
    """The same query as a call to a replica's search object."""
    return lambda query: state.search(query, k)


def direct_in_replica_process(location: str, cpus: int, clients: list[int], args) -> list[dict]:
    """Per client count, the load of direct calls to a replica's search object, made in a Ray actor of `cpus`
    CPUs: a process set up as a replica of that many CPUs is (Ray gives its torch and BLAS as many threads),
    without HTTP. The actor runs the clients itself, so no call crosses processes."""
    import ray

    from pipelines.serve import SearchState, ServeOptions

    @ray.remote(num_cpus=cpus)
    class Direct:
        def __init__(self):
            self.state = SearchState(ServeOptions(index=location, refresh_s=3600))

        def measure(self, count: int) -> dict:
            return warm_load(direct(self.state), args, count)

    actor = Direct.remote()
    try:
        return [ray.get(actor.measure.remote(count)) for count in clients]
    finally:
        ray.kill(actor)


def warm_load(ask, args, clients: int) -> dict:
    """`load` from `clients` clients for `args.seconds`, after as much as 3 s of it to warm up."""
    load(ask, min(args.seconds, 3.0), args.max_requests, clients)
    return {"clients": clients, **load(ask, args.seconds, args.max_requests, clients)}


def load(ask, seconds: float, max_requests: int, clients: int) -> dict:
    """`ask` queries from `clients` threads: QPS and latency percentiles of the answered requests, and from the
    answers, the replica's own time per batch (`took_ms`: the text encoder and the index) and the mean batch."""
    latencies, took, batches, errors, lock = [], [], [], [0], threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        i = n
        while time.monotonic() < stop:
            with lock:
                if len(latencies) + errors[0] >= max_requests:
                    return
            started = time.perf_counter()
            try:
                answer = ask(QUERIES[i % len(QUERIES)])
                with lock:
                    latencies.append(time.perf_counter() - started)
                    took.append(answer["took_ms"])
                    batches.append(answer["batch"])
            except OSError:
                with lock:
                    errors[0] += 1
            i += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "errors": errors[0], "qps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "took_p50_ms": round(float(np.median(took)), 1) if took else None,
            "batch_mean": round(float(np.mean(batches)), 2) if batches else None}


def _version(address: str) -> int:
    with urllib.request.urlopen(address + "healthz", timeout=30) as reply:
        return json.loads(reply.read())["index_version"]


def _publish_one(location: str, model, rng, dim: int) -> None:
    """A new index version: one more video, committed and published as a nightly run would, then its upkeep
    (an index that grows past the exact-search size gets its ANN index before readers move on)."""
    from pipelines.index import IndexStore, write_fragment

    store = IndexStore(location)
    with store.writer(model, run_id="bench-publish") as writer:
        vector = rng.standard_normal((1, dim)).astype(np.float32)
        batch = {"video_id": np.asarray([f"new{time.time_ns()}"], object),
                 "embedding": vector / np.linalg.norm(vector), "error": np.asarray([""], object),
                 "caption": np.asarray(["new"], object), "thumb_shard": np.asarray([""], object),
                 "thumb_offset": np.zeros(1, np.int64), "thumb_size": np.zeros(1, np.int64)}
        writer.commit([f for f in write_fragment(batch, writer.uri, model.__dict__)["fragments"] if f])
        writer.publish()
    store.refresh_search()
