"""Search latency and recall@k, exact vs ANN, over large synthetic indexes with cluster structure.

Vectors: `n / 1000` random unit centres in `dim` dimensions; each video is a centre plus a Gaussian draw in a
`LATENT`-dimensional subspace shared by all clusters (norm about 0.7 of the centre's) plus a little isotropic
noise, normalised. Embeddings of real models have such a low intrinsic dimension: near neighbours mean
something. Each query is another draw around a random centre, as a caption has its videos. (Uniform random
vectors, or isotropic noise around centres, have no near neighbours at all and make every ANN method look bad.)
Written through the job's own path (write_fragment, then IndexWriter commits), ANN built by `refresh_ann`;
recall@k is against the exact top-k, computed by a stream over all vectors.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipelines.bench import common

WORKDIR = "the indexes (each removed once measured)"
EXAMPLE = "tempme bench search --sizes 100000,1000000 --queries 50 --json"
LATENT = 32
SPREAD = 0.7    # norm of the latent part relative to a centre's
NOISE = 0.005   # isotropic noise per dimension
CHUNK = 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1000000,5000000", help="index sizes, comma-separated (default %(default)s)")
    parser.add_argument("--exact-sizes", default="100000,200000,1000000",
                        help="sizes also searched exactly, all vectors in memory (default %(default)s)")
    parser.add_argument("--kinds", default="IVF_HNSW_SQ,IVF_PQ",
                        help="ANN index kinds built and swept at each size (default %(default)s)")
    parser.add_argument("--dim", type=int, default=512, help="embedding width (default %(default)s)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=100, help="timed single queries per size (default %(default)s)")
    parser.add_argument("--graph-rows", type=int, default=None,
                        help="rows per HNSW graph of IVF_HNSW_SQ (default: the index's own, 5 million)")


def measure(args) -> dict:
    exact = common.numbers(args.exact_sizes, "--exact-sizes", least=0)
    sizes = sorted(set(common.numbers(args.sizes, "--sizes")) | set(exact))
    kinds = common.numbers(args.kinds, "--kinds", kind=str)
    with common.scratch(args) as root:
        rows = measure_sizes(sizes, args.dim, args.k, args.queries, tuple(exact), str(root), common.progress(args),
                             kinds, args.graph_rows)
    return {"benchmark": "search", "dim": args.dim, "k": args.k, "queries": args.queries, "rows": rows}


def render(result: dict) -> str:
    def ms(row: dict, key: str) -> str:
        return f"{row[key]:.2f}" if key in row else ""

    rows = []
    for r in result["rows"]:
        rows.append([f"{r['videos']:,}", "exact", "", "", "", ms(r, "exact_p50_ms"), ms(r, "exact_p95_ms"),
                     "1.000"] if r["search"] == "exact" else
                    [f"{r['videos']:,}", r["kind"], f"{r['partitions']}/{r['probes']}",
                     " ".join(f"{knob} {r[knob]}" for knob in ("ef", "refine") if r[knob]), f"{r['build_s']:.0f} s, "
                     f"{r['index_mb']:.0f} MB", ms(r, "p50_ms"), ms(r, "p95_ms"), f"{r['recall']:.3f}"])
    return (f"{result['dim']}-d clustered vectors, k={result['k']}, {result['queries']} single queries per setting; "
            f"recall@k against exact\n"
            + common.table(["videos", "search", "partitions/probed", "setting", "build", "p50 ms", "p95 ms",
                            "recall"], rows, left=2))


def _draw(rng, centres: np.ndarray, basis: np.ndarray, n: int) -> np.ndarray:
    dim = centres.shape[1]
    latent = rng.standard_normal((n, LATENT)).astype(np.float32) * (SPREAD / np.sqrt(LATENT))
    x = centres[rng.integers(0, len(centres), n)] + latent @ basis
    x += rng.normal(0, NOISE, (n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def corpus(rng, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres, latent basis) of a synthetic corpus of `n` videos."""
    centres = rng.standard_normal((max(1, n // 1000), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, LATENT)))
    return centres, basis.T.astype(np.float32)


def build(location: str, n: int, space: tuple, rng, model=None) -> float:
    """Write `n` synthetic videos of `model` (a ModelRef; default a made-up one) into the index at `location`
    and publish them, as the embedding job does; returns the seconds it took."""
    from pipelines.index import IndexStore, ModelRef, write_fragment

    model = model or ModelRef("bench", "1", "bench")
    t0 = time.perf_counter()
    with IndexStore(location).writer(model, run_id="bench") as writer:
        for start in range(0, n, CHUNK):
            rows = min(CHUNK, n - start)
            ids = np.asarray([f"video{i}" for i in range(start, start + rows)], dtype=object)
            batch = {"video_id": ids, "embedding": _draw(rng, *space, rows), "error": np.full(rows, "", object),
                     "caption": ids, "thumb_shard": np.full(rows, "", object),
                     "thumb_offset": np.zeros(rows, np.int64), "thumb_size": np.zeros(rows, np.int64)}
            writer.commit([f for f in write_fragment(batch, writer.uri, model.__dict__)["fragments"] if f])
        writer.publish()
    return time.perf_counter() - t0


def _exact_top(ds, queries: np.ndarray, k: int) -> list[set[str]]:
    """Exact top-k ids per query, streamed over the table (never the whole matrix in memory)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), "", object)
    for batch in ds.to_batches(columns=["video_id", "embedding"], batch_size=CHUNK):
        emb = batch.column("embedding").values.to_numpy().reshape(len(batch), -1)
        s = np.concatenate([best_s, queries @ emb.T], axis=1)
        ids = np.concatenate([best_i, np.broadcast_to(np.asarray(batch.column("video_id").to_pylist(), object),
                                                      (len(queries), len(batch)))], axis=1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(ids, top, 1)
    return [set(row) for row in best_i]


def _latencies(index, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
    index.search(queries[0], k)   # first query pays for opening caches
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = index.search(q, k)[0]
        times.append((time.perf_counter() - t0) * 1000)
        found.append([h.video_id for h in hits])
    return found, np.asarray(times)


def sweep(settings) -> list:
    """The query settings tried on one built index: probes and refinement (IVF_PQ) or probes and ef (HNSW)."""
    if settings.kind == "IVF_PQ":
        probes = sorted({max(4, settings.partitions * share // 100) for share in (3, 10, 25)})
        return [replace(settings, probes=p, refine=r) for p in probes for r in (10, 30)]
    probes = sorted({max(1, settings.partitions // 2), settings.partitions})
    return [replace(settings, probes=p, ef=ef, refine=r)
            for p in probes for ef in (64, 100, 150, 200, 300) for r in (0, 4)]


def _index_bytes(location: str) -> int:

    return sum(f.stat().st_size for f in Path(location, "videos.lance", "_indices").rglob("*") if f.is_file())


@contextlib.contextmanager
def _exact_max(rows: int):
    """Search exactly up to `rows` rows meanwhile (the index's threshold, set aside for a measurement)."""
    from pipelines.index import search as index_search

    limit, index_search.EXACT_MAX = index_search.EXACT_MAX, rows
    try:
        yield
    finally:
        index_search.EXACT_MAX = limit


def measure_sizes(sizes: list[int], dim: int, k: int, queries: int, exact_sizes: tuple, root: str, log,
                  kinds: list[str] = ("IVF_PQ",), graph_rows: int | None = None) -> list[dict]:
    """Per size: exact search (for the sizes in `exact_sizes`, which load every vector into memory), then per
    index kind its build seconds and size and, per query setting of `sweep`, p50/p95 ms and recall@k. Each
    index is removed once measured."""
    from pipelines.index import IndexStore, VideoIndex, refresh_ann
    from pipelines.index import search as index_search

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        space = corpus(rng, n, dim)
        location = f"{root}/index-{n}"
        write_s = build(location, n, space, rng)
        store = IndexStore(location)
        q = _draw(rng, *space, queries)
        truth = _exact_top(store.dataset(), q, k)
        base = {"videos": n, "dim": dim, "k": k, "queries": queries, "write_s": round(write_s, 1)}
        if n in exact_sizes:
            with _exact_max(n):
                t0 = time.perf_counter()
                exact = VideoIndex(store.dataset(), location)
                open_s = round(time.perf_counter() - t0, 2)
            found, times = _latencies(exact, q, k)
            rows.append({**base, "search": "exact", "open_s": open_s, **_figures("exact", found, truth, times, k)})
            del exact
        with _exact_max(0):             # search the ANN index at every size
            for kind in kinds:
                t0 = time.perf_counter()
                refresh_ann(store.dataset(), exact_max=0, kind=kind, graph_rows=graph_rows or index_search.GRAPH_ROWS)
                built = {"build_s": round(time.perf_counter() - t0, 1), "index_mb": _index_bytes(location) / 2**20}
                log(f"{n:,} videos: {kind} built in {built['build_s']} s")
                for settings in sweep(index_search.AnnSettings.of(store.dataset())):
                    store.dataset().update_config({index_search.SETTINGS_KEY: settings.to_json()})
                    found, times = _latencies(VideoIndex(store.dataset(), location, prewarm=True), q, k)
                    figures = {key.removeprefix("ann_"): value
                               for key, value in _figures("ann", found, truth, times, k).items()}
                    rows.append({**base, "search": "ANN", "kind": kind, "partitions": settings.partitions,
                                 "probes": settings.probes, "refine": settings.refine, "ef": settings.ef,
                                 **built, **figures})
                    log(f"  {rows[-1]}")
        shutil.rmtree(location, ignore_errors=True)
    return rows


def _figures(kind: str, found: list[list[str]], truth: list[set[str]], times: np.ndarray, k: int) -> dict:
    recall = float(np.mean([len(set(f) & t) / k for f, t in zip(found, truth)]))
    p50, p95 = np.percentile(times, [50, 95])
    return {f"{kind}_p50_ms": round(float(p50), 2), f"{kind}_p95_ms": round(float(p95), 2),
            f"{kind}_recall": round(recall, 4)}
