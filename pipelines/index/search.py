"""Search over one pinned version of the index: exact below a size, an ANN index (IVF_PQ) above it.

Exact search keeps the live model's vectors in memory and does one matrix product per query batch, which at
a few hundred thousand videos is as fast as any index and exactly right. Above `EXACT_MAX` rows the embedding
job builds a Lance IVF_PQ index with sqrt(n) partitions; queries probe a quarter of them (`PROBED`, at least
`MIN_PROBES`) and re-rank `REFINE` x k candidates on their full vectors (`tempme bench search` measures the
recall and latency this buys).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipelines.index.rows import ModelRef, live_model, model_rows, pending_model, sql_text

EXACT_MAX = 100_000   # rows at or below which search is exact and no ANN index is built
REBUILD_SHARE = 0.2   # rebuild the ANN index (new centroids) once this share of rows is not in it
MIN_PROBES = 32
PROBED = 0.25         # share of the partitions a query probes
REFINE = 20
SHOWN = ["video_id", "caption", "thumb_shard", "thumb_offset", "thumb_size"]


@dataclass(frozen=True)
class Hit:
    video_id: str
    score: float                # cosine similarity (index vectors and queries are L2-normalised)
    caption: str = ""
    thumbnail: tuple[str, int, int] | None = None   # (shard URI, byte offset, size) of one JPEG frame


def ann_index(ds) -> dict | None:
    """The vector index on `embedding`, if any: {name, type, rows} (rows it covers)."""
    for index in ds.describe_indices():
        if list(index.field_names) == ["embedding"]:
            return {"name": index.name, "type": index.index_type, "rows": index.num_rows_indexed}
    return None


class VideoIndex:
    """One version of an index, opened for search; it never moves to a newer version by itself."""

    def __init__(self, ds, location: str):
        self.ds, self.location, self.version = ds, location, ds.version
        self.model: ModelRef = live_model(ds)
        self.filter = model_rows(self.model) if pending_model(ds) else None   # another version's rows are in
        self.count = ds.count_rows(self.filter)
        self.ann = ann_index(ds) if self.count > EXACT_MAX else None
        self._rows = self._matrix = self._positions = None
        if self.ann is None:
            table = ds.to_table(columns=[*SHOWN, "embedding"], filter=self.filter)
            emb = table.column("embedding").combine_chunks()
            self.dim = emb.type.list_size
            self._matrix = emb.values.to_numpy().reshape(-1, self.dim) if len(emb) else np.zeros((0, self.dim),
                                                                                                 np.float32)
            self._rows = table.drop_columns(["embedding"])
        else:
            self.dim = ds.schema.field("embedding").type.list_size
            self.probes = int(ds.config().get("tempme.ann_probes", MIN_PROBES))

    def __len__(self) -> int:
        return self.count

    @property
    def kind(self) -> str:
        return f"ANN ({self.ann['type']})" if self.ann else "exact"

    def video_ids(self) -> list[str]:
        if self._rows is not None:
            return self._rows.column("video_id").to_pylist()
        return self.ds.to_table(columns=["video_id"], filter=self.filter).column(0).to_pylist()

    def find(self, video_id: str) -> Hit | None:
        """The live row of `video_id` as a Hit (score 0), or None."""
        if self._rows is not None:
            if self._positions is None:
                self._positions = {v: i for i, v in enumerate(self._rows.column("video_id").to_pylist())}
            at = self._positions.get(video_id)
            return None if at is None else _hit(self._rows.slice(at, 1).to_pylist()[0], 0.0)
        where = f"video_id = {sql_text(video_id)}" + (f" AND ({self.filter})" if self.filter else "")
        rows = self.ds.to_table(columns=SHOWN, filter=where, limit=1).to_pylist()
        return _hit(rows[0], 0.0) if rows else None

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Top-k videos by cosine for each row of `queries` [n, dim] (or one vector [dim])."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"query width {q.shape[1]} differs from the index's {self.dim}")
        k = min(k, self.count)
        if k <= 0:
            return [[] for _ in range(len(q))]
        return self._exact(q, k) if self.ann is None else [self._nearest(v, k) for v in q]

    def _exact(self, q: np.ndarray, k: int) -> list[list[Hit]]:
        scores = self._matrix @ q.T                                   # [rows, n]
        top = np.argpartition(scores, len(scores) - k, axis=0)[len(scores) - k:]
        results = []
        for j in range(q.shape[0]):
            best = top[np.argsort(-scores[top[:, j], j], kind="stable"), j]
            rows = self._rows.take(best).to_pylist()
            results.append([_hit(r, float(scores[i, j])) for r, i in zip(rows, best)])
        return results

    def _nearest(self, v: np.ndarray, k: int) -> list[Hit]:
        table = self.ds.to_table(columns=[*SHOWN, "_distance"], filter=self.filter,
                                 prefilter=self.filter is not None, disable_scoring_autoprojection=True,
                                 nearest={"column": "embedding", "q": v, "k": k, "metric": "dot",
                                          "nprobes": self.probes, "refine_factor": REFINE})
        return [_hit(r, 1.0 - r["_distance"]) for r in table.to_pylist()]


def _hit(row: dict, score: float) -> Hit:
    thumb = (row["thumb_shard"], row["thumb_offset"], row["thumb_size"]) if row.get("thumb_shard") else None
    return Hit(row["video_id"], score, row.get("caption") or "", thumb)


def refresh_ann(ds, exact_max: int = EXACT_MAX) -> str:
    """Keep the ANN index fit for the live rows: build it once they pass `exact_max` (with a BTREE index on
    `video_id`), fold new rows into it, and rebuild it (new partitions) when too many rows are not in it or it
    was trained on another model.
    Returns what was done: "exact", "built", "updated" or "current"."""
    model = live_model(ds)
    rows = ds.count_rows()
    if rows <= exact_max:
        return "exact"
    if not any(list(i.field_names) == ["video_id"] for i in ds.describe_indices()):
        ds.create_scalar_index("video_id", "BTREE")      # lookups by id (thumbnails) read a page, not a column
    index = ann_index(ds)
    trained_on = ds.config().get("tempme.ann_model")
    if index is None or trained_on != model.to_json() or rows - index["rows"] > REBUILD_SHARE * rows:
        dim = ds.schema.field("embedding").type.list_size
        partitions = max(1, int(math.sqrt(rows)))
        ds.create_index("embedding", "IVF_PQ", metric="dot", replace=True, num_partitions=partitions,
                        num_sub_vectors=max(1, dim // 8))
        ds.update_config({"tempme.ann_model": model.to_json(),
                          "tempme.ann_probes": str(max(MIN_PROBES, int(partitions * PROBED)))})
        return "built"
    if index["rows"] < rows:
        ds.optimize.optimize_indices()
        return "updated"
    return "current"
