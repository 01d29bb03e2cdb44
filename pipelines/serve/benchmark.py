"""How the search service holds up (`tempme bench serve`): queries per second and latency over HTTP at each
index size and replica count, and how long a newly published index version takes to be served.

The index holds synthetic vectors (`pipelines.index.benchmark`) recorded as embedded by a random-weight tiny
model, whose text encoder then encodes the queries for real, so each request pays what a real one pays:
HTTP, the text encoder, the search and the JSON. The load generator runs `clients` threads on 127.0.0.1 for
at most `seconds` and `max_requests`.
"""
from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from pipelines.index import IndexStore, ModelRef, refresh_ann, write_fragment
from pipelines.index.benchmark import build, corpus

from . import APP_NAME, ServeOptions, start_service

QUERIES = ("a red square moving left", "a man is cooking", "two dogs play in the snow", "a blue bar moving up",
           "someone explains a diagram", "cars on a highway at night", "a cat jumps on a table")


def _tiny_model(root: Path) -> ModelRef:
    from pipelines.model_store import build_model, resolve_model

    return resolve_model(str(build_model("tempme-tiny-12f").save_adapter(root / "tiny-bench")))[0]


def load(address: str, seconds: float, max_requests: int, clients: int, k: int = 10) -> dict:
    """Hammer `address`/search from `clients` threads; QPS and latency percentiles of the answered requests."""
    latencies, errors, lock = [], [0], threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        i = n
        while time.monotonic() < stop:
            with lock:
                if len(latencies) + errors[0] >= max_requests:
                    return
            url = f"{address}search?q={urllib.parse.quote(QUERIES[i % len(QUERIES)])}&k={k}"
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=30) as reply:
                    reply.read()
                with lock:
                    latencies.append(time.perf_counter() - started)
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
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None}


def _version(address: str) -> int:
    with urllib.request.urlopen(address + "healthz", timeout=30) as reply:
        return json.loads(reply.read())["index_version"]


def _publish_one(location: str, model: ModelRef, rng, dim: int) -> None:
    """A new index version: one more video, committed and published as a nightly run would."""
    with IndexStore(location).writer(model, run_id="bench-publish") as writer:
        vector = rng.standard_normal((1, dim)).astype(np.float32)
        batch = {"video_id": np.asarray([f"new{time.time_ns()}"], object),
                 "embedding": vector / np.linalg.norm(vector), "error": np.asarray([""], object),
                 "caption": np.asarray(["new"], object), "thumb_shard": np.asarray([""], object),
                 "thumb_offset": np.zeros(1, np.int64), "thumb_size": np.zeros(1, np.int64)}
        writer.commit([f for f in write_fragment(batch, writer.uri, model.__dict__)["fragments"] if f])
        writer.publish()


def measure(sizes: list[int], replica_counts: list[int], seconds: float, max_requests: int, clients: int,
            port: int, refresh_s: float, workdir: str | None = None, log=print) -> dict:
    """Per index size and replica count: QPS, p50/p99; per size: seconds from a publish to its being served."""
    import ray
    from ray import serve

    root = Path(workdir or tempfile.mkdtemp(prefix="tempme-bench-serve-"))
    rng = np.random.default_rng(0)
    model = _tiny_model(root)
    dim = 64
    rows, follow = [], []
    if not ray.is_initialized():
        ray.init(logging_level="WARNING", include_dashboard=False)
    for n in sizes:
        location = str(root / f"index-{n}")
        log(f"writing an index of {n} videos ...")
        build(location, n, corpus(rng, n, dim), rng, model)
        refresh_ann(IndexStore(location).dataset())
        for replicas in replica_counts:
            address = start_service(ServeOptions(index=location, refresh_s=refresh_s), replicas, port=port)
            load(address, min(seconds, 3.0), max_requests, clients)            # warm every replica up
            row = {"videos": n, "replicas": replicas, "clients": clients, **load(address, seconds, max_requests,
                                                                                 clients)}
            log(f"  {row}")
            rows.append(row)
            if replicas == replica_counts[-1]:
                before = _version(address)
                started = time.perf_counter()
                _publish_one(location, model, rng, dim)
                while _version(address) == before:
                    time.sleep(0.05)
                follow.append({"videos": n, "refresh_s": refresh_s,
                               "publish_to_served_s": round(time.perf_counter() - started, 2)})
                log(f"  {follow[-1]}")
            serve.delete(APP_NAME)
        serve.shutdown()
    return {"load": rows, "follow": follow}
