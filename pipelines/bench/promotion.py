"""Search latency through a model promotion: queries at a steady rate against the service while a second model
version is embedded into the index, published and indexed, against the latency before the change.

The index holds synthetic vectors (`pipelines.bench.search`) of a random-weight model; the change is made by a
second process, as the embedding job and its upkeep would make it (every row of the new version committed in
batches, published, its ANN index built, readers let on), at the lowest CPU priority: on a cluster that work
runs on other nodes than the service, on this machine it shares its cores. The load is open-loop: requests
leave on schedule whether or not earlier ones have answered, so a stall shows as latency, not as fewer queries.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pipelines.bench import common
from pipelines.bench.search import build, corpus
from pipelines.bench.serve import QUERIES, bench_model, over_http
from pipelines.model.registry import resolve_model

WORKDIR = "the models and the index"
EXAMPLE = "tempme bench promotion --videos 1000000 --rate 20 --json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=1_000_000, help="videos in the index (default %(default)s)")
    parser.add_argument("--model", default="tempme-tiny-12f", help="model config of both versions (default "
                                                                   "%(default)s)")
    parser.add_argument("--rate", type=float, default=20.0, help="queries per second (default %(default)s)")
    parser.add_argument("--before-s", type=float, default=30.0, help="seconds of load before the change (default "
                                                                     "%(default)s)")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="the change's time limit (default %(default)s)")
    parser.add_argument("--port", type=int, default=8124, help="port on 127.0.0.1 (default %(default)s)")


def measure(args) -> dict:
    from pipelines.index import IndexStore
    from pipelines.serve import ServeOptions, ServiceOptions, start_service, stop_service

    log = common.progress(args)
    with common.scratch(args) as root:
        (old, dim), (new, _) = bench_model(root / "old", args.model, 0), bench_model(root / "new", args.model, 1)
        assert old.version != new.version, "the two model versions must differ"
        location = str(root / "index")
        log(f"writing an index of {args.videos:,} videos of {old.name} v{old.version[:8]} ...")
        rng = np.random.default_rng(0)
        build(location, args.videos, corpus(rng, args.videos, dim), rng, old)
        IndexStore(location).refresh_search()
        common.start_ray()
        address = start_service(ServeOptions(index=location, refresh_s=1.0), ServiceOptions(port=args.port))
        try:
            with Load(over_http(address), args.rate) as load:
                time.sleep(args.before_s)
                before = load.mark()
                log(f"before: {_summary(load.since(0, before))}; promoting to v{new.version[:8]} ...")
                change = multiprocessing.get_context("spawn").Process(
                    target=_promote, args=(location, new.uri, args.videos, dim), daemon=True)
                change.start()
                served_after = _wait_for_model(address, new.version, change, args.timeout_s)
                change.join(timeout=args.timeout_s)
                time.sleep(5.0)            # a little more load on the new version
                during = load.since(before, load.mark())
        finally:
            stop_service()
    return {"benchmark": "promotion", "videos": args.videos, "model": args.model, "rate": args.rate,
            "before": _summary(load.since(0, before)), "during": _summary(during),
            "new_model_served_after_s": served_after, "change_exit_code": change.exitcode}


def render(result: dict) -> str:
    rows = [[phase, s["requests"], s["errors"], s["p50_ms"], s["p99_ms"], s["max_ms"]]
            for phase, s in (("before", result["before"]), ("during the change", result["during"]))]
    served = result["new_model_served_after_s"]
    after = (f"the new model version served {served} s after the change began" if served is not None else
             "the new model version was not served within the time limit")
    return (f"{result['videos']:,} videos, {result['rate']} queries/s, {result['model']} (random weights)\n"
            + common.table(["phase", "requests", "errors", "p50 ms", "p99 ms", "worst ms"], rows) + "\n" + after)


class Load:
    """Requests sent at a steady rate from a pool of threads, each one's (start, latency, error) kept."""

    def __init__(self, ask, rate: float):
        self.ask, self.interval = ask, 1.0 / rate
        self.results: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(64)
        self._thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _send(self) -> None:
        began, n = time.perf_counter(), 0
        while not self._stop.wait(max(0.0, began + n * self.interval - time.perf_counter())):
            self._pool.submit(self._one, QUERIES[n % len(QUERIES)])
            n += 1

    def _one(self, query: str) -> None:
        started = time.perf_counter()
        try:
            self.ask(query)
            ok = True
        except OSError:
            ok = False
        self.results.append((started, time.perf_counter() - started, not ok))

    def mark(self) -> float:
        return time.perf_counter()

    def since(self, start: float, end: float) -> list[tuple[float, float, bool]]:
        return [r for r in self.results if start <= r[0] < end]


def _summary(results: list[tuple[float, float, bool]]) -> dict:
    ms = np.asarray([latency for _, latency, error in results if not error]) * 1000
    figures = {"requests": len(results), "errors": sum(error for _, _, error in results)}
    if len(ms):
        figures.update({"p50_ms": round(float(np.percentile(ms, 50)), 1),
                        "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)})
    return figures


def _wait_for_model(address: str, version: str, change, timeout_s: float) -> float | None:
    """Seconds until the service answers with model `version`, or None (the change failed, or took too long)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        with urllib.request.urlopen(address + "healthz", timeout=30) as reply:
            if json.loads(reply.read())["model"]["version"] == version:
                return round(time.perf_counter() - started, 1)
        if change.exitcode not in (None, 0):
            return None
        time.sleep(0.5)
    return None


def _promote(location: str, model_dir: str, videos: int, dim: int) -> None:
    """In a process of its own at the lowest priority: the new version embedded, published and indexed."""
    from pipelines.index import IndexStore

    os.nice(19)
    rng = np.random.default_rng(1)
    build(location, videos, corpus(rng, videos, dim), rng, resolve_model(model_dir)[0])
    IndexStore(location).refresh_search()
