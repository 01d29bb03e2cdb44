"""Search over one pinned version of the index: exact below a size, an ANN index above it.

Exact search keeps the live model's vectors in memory (float32: half precision was measured to reorder the
top 10 of 3-20% of queries) and does one matrix product per query batch, which at a hundred thousand videos
reads the vectors at the memory's speed and is exactly right. Above `EXACT_MAX` rows the embedding job builds
a Lance ANN index; how it is built and queried (`AnnSettings`: kind, partitions, probes, refinement) is chosen
by `tempme bench search` and recorded in the table's config beside the index it describes.

A version is searched only the fast way: with its ANN index above the threshold (a version without one is
refused, `IndexNotReady`, and readers stay on the version pinned before it), with at most `FOLD_ROWS` rows
outside the index (scored exactly by Lance, so new rows are found at once; writers fold them in as they come).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from pipelines.index.rows import ModelRef, VideoIndexError, live_model, model_rows, pending_model, sql_text

EXACT_MAX = 100_000     # rows at or below which search is exact and no ANN index is built
REBUILD_SHARE = 0.2     # retrain the ANN index (new centroids) once this share of rows was added since
FOLD_ROWS = 20_000      # rows a writer lets pile up outside the ANN index before it folds them in
UNINDEXED_MAX = 100_000  # more rows than this outside the index (a fold failed): queries skip them, not scan
DEFAULT_KIND = "IVF_HNSW_SQ"
GRAPH_ROWS = 5_000_000   # rows per HNSW graph (IVF partition) of IVF_HNSW_SQ
DEFAULT_K = 10          # videos a query asks for, unless it says
SETTINGS_KEY = "tempme.ann"
LEGACY_MODEL_KEY, LEGACY_PROBES_KEY = "tempme.ann_model", "tempme.ann_probes"   # what older versions recorded
SHOWN = ["video_id", "caption", "thumb_shard", "thumb_offset", "thumb_size"]
MOMENT_SHOWN = ["source", "window_start", "window_end"]   # in indexes written since moments
FANOUT = 4              # rows fetched per video asked for when videos have several windows (grown if short)
FETCHES = 4             # at most this many fetches, growing by FANOUT, to find k distinct videos


class IndexNotReady(VideoIndexError):
    """A version above the exact-search size whose ANN index is missing or was trained on another model."""


@dataclass(frozen=True)
class AnnSettings:
    """How the ANN index is built and queried (measured by `tempme bench search`)."""
    kind: str            # "IVF_PQ" or "IVF_HNSW_SQ"
    partitions: int
    probes: int          # partitions a query visits
    refine: int = 0      # re-rank refine x k candidates on their full vectors (0: rank on the compressed ones)
    ef: int = 0          # IVF_HNSW_SQ: candidates the graph walk keeps in each partition
    model: str = ""      # the model version (JSON) whose vectors trained it
    trained_rows: int = 0    # how many there were

    @classmethod
    def for_rows(cls, rows: int, kind: str, graph_rows: int = GRAPH_ROWS) -> AnnSettings:
        """The measured defaults (`tempme bench search`, README): a graph per `graph_rows` rows, all of them
        visited, each walk keeping 300 candidates and ranking on the quantised vectors (IVF_HNSW_SQ: recall 0.95
        at 5M in one graph, where re-ranking on full vectors costs more than it gains), or sqrt(rows)
        partitions of which a query probes a quarter (IVF_PQ: on clustered vectors a smaller share loses recall
        fast)."""
        if kind == "IVF_HNSW_SQ":
            partitions = max(1, round(rows / graph_rows))
            return cls(kind, partitions, partitions, ef=300)
        if kind == "IVF_PQ":
            partitions = max(1, int(math.sqrt(rows)))
            return cls(kind, partitions, max(8, partitions // 4), refine=20)
        raise ValueError(f"unknown ANN index kind {kind!r}; choose IVF_HNSW_SQ or IVF_PQ")

    def build_params(self, dim: int) -> dict:
        params = {"num_partitions": self.partitions}
        if self.kind == "IVF_PQ":
            params["num_sub_vectors"] = max(1, dim // 8)
        return params

    def query(self, q: np.ndarray, k: int) -> dict:
        """Lance's `nearest` for query vectors `q` ([dim] or [n, dim])."""
        params = {"column": "embedding", "q": q, "k": k, "metric": "dot", "minimum_nprobes": self.probes,
                  "maximum_nprobes": self.probes}
        if self.refine:
            params["refine_factor"] = self.refine
        if self.ef:
            params["ef"] = max(self.ef, k)
        return params

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def of(cls, ds) -> AnnSettings | None:
        config = ds.config()
        if config.get(SETTINGS_KEY):
            return cls(**json.loads(config[SETTINGS_KEY]))
        if config.get(LEGACY_MODEL_KEY):     # an index built before the settings were recorded: IVF_PQ
            probes = int(config.get(LEGACY_PROBES_KEY, 32))
            return cls("IVF_PQ", partitions=probes * 4, probes=probes, refine=20, model=config[LEGACY_MODEL_KEY],
                       trained_rows=16 * probes * probes)
        return None


@dataclass(frozen=True)
class Hit:
    """A video found, by its best-scoring sample: the whole video's, or its best window (`start`, `end`)."""
    video_id: str
    score: float                # cosine similarity (index vectors and queries are L2-normalised)
    caption: str = ""
    thumbnail: tuple[str, int, int] | None = None   # (shard URI, byte offset, size) of one JPEG frame
    source: str = ""            # the video's path or URI ("" in indexes written before moments)
    start: float | None = None  # seconds: the window of the video that matched (None: the whole video)
    end: float | None = None
    moments: tuple[tuple[float, float, float], ...] = ()   # (start, end, score) of its next best windows


def ann_index(ds) -> dict | None:
    """The vector index on `embedding`, if any: {name, type, rows (it covers), segments (it and its deltas)}."""
    for index in ds.describe_indices():
        if list(index.field_names) == ["embedding"]:
            return {"name": index.name, "type": index.index_type, "rows": index.num_rows_indexed,
                    "segments": len(index.segments)}
    return None


@dataclass(frozen=True)
class SearchPlan:
    """How a query to one version is answered: "exact", "ANN" or "not ready"; rows in and outside the index."""
    way: str
    rows: int
    indexed: int = 0
    settings: AnnSettings | None = None
    index_name: str = ""

    @property
    def unindexed(self) -> int:
        return max(0, self.rows - self.indexed) if self.way == "ANN" else 0

    def describe(self) -> str:
        if self.way != "ANN":
            return self.way
        s = self.settings
        knobs = ", ".join(f"{name} {value}" for name, value in (("ef", s.ef), ("refine", s.refine)) if value)
        scored = "skipped" if self.unindexed > UNINDEXED_MAX else "scored exactly"
        return (f"ANN ({s.kind}, {s.partitions} partitions, {s.probes} probed, {knobs}), "
                f"{self.indexed:,} rows indexed, {self.unindexed:,} not yet ({scored})")


def search_plan(ds) -> SearchPlan:
    """How a query to this version of the table is answered."""
    model = live_model(ds)
    rows = ds.count_rows(model_rows(model) if pending_model(ds) else None)
    if rows <= EXACT_MAX:
        return SearchPlan("exact", rows)
    index, settings = ann_index(ds), AnnSettings.of(ds)
    if index is None or settings is None or settings.model != model.to_json():
        return SearchPlan("not ready", rows)
    return SearchPlan("ANN", rows, index["rows"], settings, index["name"])


class VideoIndex:
    """One version of an index, opened for search; it never moves to a newer version by itself.

    `prewarm` loads the ANN index into the process's Lance cache now (a service replica), not on the first
    queries."""

    def __init__(self, ds, location: str, prewarm: bool = False):
        self.ds, self.location, self.version = ds, location, ds.version
        self.model: ModelRef = live_model(ds)
        self.filter = model_rows(self.model) if pending_model(ds) else None   # another version's rows are in
        self.plan = search_plan(ds)
        self.count = self.plan.rows
        if self.plan.way == "not ready":
            raise IndexNotReady(f"{location} version {self.version} has {self.count:,} videos and no ANN index "
                                f"over them yet (the embedding job builds it; `tempme index compact` does too); "
                                f"search a version that has one (`tempme index info` lists them)")
        self.dim = ds.schema.field("embedding").type.list_size
        self._rows = self._matrix = self._positions = None
        self.shown = SHOWN + [c for c in MOMENT_SHOWN if c in ds.schema.names]
        if self.plan.way == "exact":
            table = ds.to_table(columns=[*self.shown, "embedding"], filter=self.filter)
            emb = table.column("embedding").combine_chunks()
            self._matrix = (emb.values.to_numpy().reshape(-1, self.dim) if len(emb)
                            else np.zeros((0, self.dim), np.float32))
            self._rows = table.drop_columns(["embedding"])
        # whether some video has several windows: from the rows in memory, else one query that stops at the first
        if "window_start" not in self.shown:
            self.windowed = False
        elif self._rows is not None:
            self.windowed = self._rows.column("window_start").null_count < self._rows.num_rows
        else:
            self.windowed = ds.to_table(columns=["window_start"], filter=_windows(self.filter), limit=1).num_rows > 0
        if self._rows is None and prewarm:
            ds.prewarm_index(self.plan.index_name)

    def __len__(self) -> int:
        return self.count

    @property
    def kind(self) -> str:
        return f"ANN ({self.plan.settings.kind})" if self.plan.way == "ANN" else "exact"

    def video_ids(self) -> list[str]:
        if self._rows is not None:
            return self._rows.column("video_id").to_pylist()
        return self.ds.to_table(columns=["video_id"], filter=self.filter).column(0).to_pylist()

    def find(self, video_id: str, start: float | None = None) -> Hit | None:
        """The live row of `video_id` (of its window starting at `start`, else its first) as a Hit (score 0),
        or None."""
        if self._rows is not None:
            if self._positions is None:
                starts = (self._rows.column("window_start").to_pylist() if "window_start" in self.shown
                          else [None] * self._rows.num_rows)
                self._positions = {}
                for i, (v, t) in enumerate(zip(self._rows.column("video_id").to_pylist(), starts)):
                    self._positions.setdefault((v, None), i)
                    self._positions[(v, _moment(t))] = i
            at = self._positions.get((video_id, _moment(start)))
            return None if at is None else _hit(self._rows.slice(at, 1).to_pylist()[0], 0.0)
        where = [f"video_id = {sql_text(video_id)}", *([f"({self.filter})"] if self.filter else [])]
        if start is not None and "window_start" in self.shown:
            where.append(f"abs(window_start - {float(start)!r}) < 0.0005")
        rows = self.ds.to_table(columns=self.shown, filter=" AND ".join(where), limit=1).to_pylist()
        return _hit(rows[0], 0.0) if rows else None

    def search(self, queries: np.ndarray, k: int = DEFAULT_K, moments: int = 0) -> list[list[Hit]]:
        """Top-k videos by cosine for each row of `queries` [n, dim] (or one vector [dim]). A video cut into
        windows counts once, by its best window; `moments`: how many of its next best windows each hit also
        names."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"query width {q.shape[1]} differs from the index's {self.dim}")
        k = min(k, self.count)
        if k <= 0:
            return [[] for _ in range(len(q))]
        if not self.windowed:
            return self._rows_by_score(q, k)
        fetch = min(self.count, k * FANOUT * (1 + moments))
        for _ in range(FETCHES):
            found = [_by_video(rows, k, moments) for rows in self._rows_by_score(q, fetch)]
            if fetch >= self.count or all(len(hits) >= k for hits in found):
                return found
            fetch = min(self.count, fetch * FANOUT)
        return found

    def _rows_by_score(self, q: np.ndarray, k: int) -> list[list[Hit]]:
        return self._exact(q, k) if self._matrix is not None else self._nearest(q, k)

    def _exact(self, q: np.ndarray, k: int) -> list[list[Hit]]:
        scores = self._matrix @ q.T                                   # [rows, n]
        top = np.argpartition(scores, len(scores) - k, axis=0)[len(scores) - k:]
        results = []
        for j in range(q.shape[0]):
            best = top[np.argsort(-scores[top[:, j], j], kind="stable"), j]
            rows = self._rows.take(best).to_pylist()
            results.append([_hit(r, float(scores[i, j])) for r, i in zip(rows, best)])
        return results

    def _nearest(self, q: np.ndarray, k: int) -> list[list[Hit]]:
        """One Lance query for the whole batch (`query_index` says whose row each result is)."""
        table = self.ds.to_table(columns=[*self.shown, "_distance"], filter=self.filter,
                                 prefilter=self.filter is not None, disable_scoring_autoprojection=True,
                                 nearest=self.plan.settings.query(q if len(q) > 1 else q[0], k),
                                 fast_search=self.plan.unindexed > UNINDEXED_MAX)
        results: list[list[Hit]] = [[] for _ in range(len(q))]
        owners = table.column("query_index").to_pylist() if "query_index" in table.column_names else [0] * len(table)
        for owner, row in zip(owners, table.to_pylist()):
            results[owner].append(_hit(row, 1.0 - row["_distance"]))
        return [sorted(hits, key=lambda h: -h.score) for hits in results]


def _hit(row: dict, score: float) -> Hit:
    thumb = (row["thumb_shard"], row["thumb_offset"], row["thumb_size"]) if row.get("thumb_shard") else None
    return Hit(row["video_id"], score, row.get("caption") or "", thumb, row.get("source") or "",
               row.get("window_start"), row.get("window_end"))


def _by_video(hits: list[Hit], k: int, moments: int) -> list[Hit]:
    """Rows ranked by score, as the best `k` videos: each by its best window, with its next `moments`."""
    best: dict[str, Hit] = {}
    more: dict[str, list[tuple[float, float, float]]] = {}
    for hit in hits:
        if hit.video_id not in best:
            if len(best) < k:
                best[hit.video_id], more[hit.video_id] = hit, []
        elif len(more[hit.video_id]) < moments and hit.start is not None:
            more[hit.video_id].append((hit.start, hit.end, hit.score))
    return [replace(hit, moments=tuple(more[v])) for v, hit in best.items()]


def _moment(start: float | None) -> float | None:
    return None if start is None else round(float(start), 3)


def _windows(live: str | None) -> str:
    """A Lance filter: the rows of windows (of videos cut into moments) among the live rows."""
    return "window_start IS NOT NULL" + (f" AND ({live})" if live else "")


def refresh_ann(ds, exact_max: int | None = None, kind: str | None = None, graph_rows: int = GRAPH_ROWS) -> str:
    """Keep the ANN index fit for the live rows: build it once they pass `exact_max` (with scalar indexes on
    `video_id` and the model columns), fold new rows and the writers' delta indexes into it, and retrain it
    when a `REBUILD_SHARE` of the rows came after its training or it was trained on another model. `kind`:
    the index kind (default: the recorded one, else `DEFAULT_KIND`).
    `exact_max` (default `EXACT_MAX`): the rows at or below which there is no ANN index; `graph_rows`: rows per
    graph of a new IVF_HNSW_SQ index.
    Returns what was done: "exact", "built", "updated" or "current"."""
    model = live_model(ds)
    rows = ds.count_rows()
    if rows <= (EXACT_MAX if exact_max is None else exact_max):
        return "exact"
    scalar = {tuple(i.field_names) for i in ds.describe_indices()}
    for column, kind_of in (("video_id", "BTREE"), ("model_name", "BITMAP"), ("model_version", "BITMAP")):
        if (column,) not in scalar:   # lookups by id (thumbnails) and filters on the model read pages, not columns
            ds.create_scalar_index(column, kind_of)
    index, settings = ann_index(ds), AnnSettings.of(ds)
    stale = (settings is None or settings.model != model.to_json() or (kind and kind != settings.kind)
             or rows * (1 - REBUILD_SHARE) > settings.trained_rows)
    if index is None or stale:
        chosen = AnnSettings.for_rows(rows, kind or (settings.kind if settings else DEFAULT_KIND), graph_rows)
        chosen = replace(chosen, model=model.to_json(), trained_rows=rows)
        dim = ds.schema.field("embedding").type.list_size
        ds.create_index("embedding", chosen.kind, metric="dot", replace=True, **chosen.build_params(dim))
        ds.update_config({SETTINGS_KEY: chosen.to_json()})
        return "built"
    if index["rows"] < rows or index["segments"] > 1:
        ds.optimize.optimize_indices(num_indices_to_merge=index["segments"])
        return "updated"
    return "current"
