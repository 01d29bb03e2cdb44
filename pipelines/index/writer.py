"""Adding a model version's embeddings to the index: fragments written by workers, committed by the job.

Workers call `write_fragment` on batches of embedded rows: it writes the data files into the table's folder and
returns their fragment descriptions (a few hundred bytes). The job's `IndexWriter` commits those as they come,
so a killed run keeps every committed fragment and the next run embeds only what is missing. Rows of a new
model version are committed beside the live ones; `publish()` switches the live version in one commit and
then deletes the old rows.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lance import LanceOperation
from lance.fragment import FragmentMetadata, write_fragments

from pipelines.index import search
from pipelines.index.lease import WriterLease
from pipelines.index.rows import (
    FAILURES,
    LIVE_KEY,
    PENDING_KEY,
    VIDEOS,
    ModelRef,
    live_model,
    model_rows,
    pending_model,
    sql_text,
    upgrade,
    utc_now,
    video_schema,
)
from pipelines.shards.format import sample_names
from pipelines.shards.id_set import IdSet, fingerprints
from pipelines.storage.location import lance_options


def write_fragment(batch: dict[str, np.ndarray], uri: str, model: dict) -> dict[str, np.ndarray]:
    """Ray Data batch function: write the batch's embedded rows (those without an error) as Lance data files
    under `uri`; return per video its id, error and source, and on the first row the fragments' JSON."""
    errors = [str(e) for e in batch["error"]]
    ok = np.array([not e for e in errors], bool)
    fragments = ""
    if ok.any():
        emb = np.ascontiguousarray(np.stack(batch["embedding"][ok]), np.float32)
        n, dim = emb.shape
        table = pa.Table.from_arrays([
            pa.array([str(v) for v in batch["video_id"][ok]], pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
            pa.array([model["name"]] * n), pa.array([model["version"]] * n), pa.array([model["uri"]] * n),
            pa.array([utc_now()] * n, pa.timestamp("us", tz="UTC")),
            pa.array([str(c) for c in batch["caption"][ok]], pa.string()),
            pa.array([str(s) for s in batch["thumb_shard"][ok]], pa.string()),
            pa.array(batch["thumb_offset"][ok].astype(np.int64)), pa.array(batch["thumb_size"][ok].astype(np.int64)),
            *(_moment_column(batch, name, kind, ok, n) for name, kind in MOMENT_COLUMNS),
        ], schema=video_schema(dim))
        written = write_fragments(table, uri, schema=table.schema, storage_options=lance_options(uri))
        fragments = json.dumps({"dim": dim, "fragments": [json.dumps(f.to_json()) for f in written]})
    rows = len(errors)
    return {"video_id": np.asarray([str(v) for v in batch["video_id"]], dtype=object),
            "source": np.asarray([str(s) for s in batch["thumb_shard"]], dtype=object),
            "error": np.asarray(errors, dtype=object),
            "fragments": np.asarray([fragments] + [""] * (rows - 1), dtype=object)}


MOMENT_COLUMNS = (("source", pa.string()), ("window_start", pa.float64()), ("window_end", pa.float64()))


def _moment_column(batch: dict[str, np.ndarray], name: str, kind: pa.DataType, ok: np.ndarray, n: int) -> pa.Array:
    """A column a batch may leave out (whole videos of no known source): nulls then; NaN is null too."""
    if name not in batch:
        return pa.nulls(n, kind)
    values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in batch[name][ok]]
    return pa.array([None if v is None else (str(v) if kind == pa.string() else float(v)) for v in values], kind)


FAILURE_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("error", pa.string()),     # the last error
    ("source", pa.string()), ("run_id", pa.string()), ("model_version", pa.string()),   # of the last failure
    ("first_failed_at", pa.timestamp("us", tz="UTC")), ("failed_at", pa.timestamp("us", tz="UTC")),
    ("failures", pa.int64()),                               # runs it failed in
])


class IndexWriter:
    """One run's writes for one model version into `store` (an `IndexStore`); made by `IndexStore.writer`,
    which holds `lease` while the writer lives."""

    def __init__(self, store, model: ModelRef, run_id: str, lease: WriterLease):
        self.store, self.model, self.run_id, self.lease = store, model, run_id, lease
        self.uri = store.uri(VIDEOS)
        ds = store.dataset()
        self.live, pending = live_model(ds), pending_model(ds)
        self.replacing = self.live is not None and not model.same_version(self.live)
        if ds is not None:
            upgrade(ds)
            keep = [model, self.live] if self.replacing else [model]
            stale = " AND ".join(f"NOT ({model_rows(m)})" for m in keep)
            if ds.count_rows(stale):       # an interrupted re-embed with yet another version
                ds.delete(stale)
            if self.live is None:          # killed between its first commit and naming the live model
                ds.update_config({LIVE_KEY: model.to_json(), PENDING_KEY: ""})
                self.live = model
            elif self.replacing and not model.same_version(pending):
                store.pin_serving()        # readers stay on the old model's complete, indexed rows
                ds.update_config({PENDING_KEY: model.to_json()})
            elif not self.replacing and pending is not None:
                ds.update_config({PENDING_KEY: ""})

    def done_ids(self) -> Iterator[pa.Array]:
        """Names (`sample_names`: video ids, or a window's) of the samples this model version already has in
        the index (committed by this or an interrupted run), a batch at a time."""
        ds = self.store.dataset()
        for batch in ds.to_batches(columns=["video_id", "window_start"], filter=model_rows(self.model)) \
                if ds is not None else ():
            yield sample_names(batch["video_id"], batch["window_start"])

    def commit(self, written: Sequence[str]) -> None:
        """Commit the fragments that `write_fragment` described (its JSON strings)."""
        self.lease.check()
        parts = [json.loads(w) for w in written if w]
        fragments = [FragmentMetadata.from_json(f) for p in parts for f in p["fragments"]]
        if not fragments:
            return
        ds = self.store.dataset()
        if ds is None:
            op = LanceOperation.Overwrite(video_schema(parts[0]["dim"]), fragments)
            ds = lance.LanceDataset.commit(self.uri, op, storage_options=self.store.options)
            ds.update_config({LIVE_KEY: self.model.to_json(), PENDING_KEY: ""})
        else:
            self._pin_before_a_slow_version(ds, sum(f.num_rows for f in fragments))
            ds = lance.LanceDataset.commit(self.uri, LanceOperation.Append(fragments), read_version=ds.version,
                                           storage_options=self.store.options)
            self._fold_new_rows(ds)

    def _pin_before_a_slow_version(self, ds, adding: int) -> None:
        """Readers stay on this version if the next one would pass the exact-search size with no ANN index to
        search it by (the first time an index grows past it): the job's upkeep builds it, then lets them on."""
        if self.replacing or ds.count_rows() + adding <= search.EXACT_MAX or search.ann_index(ds) is not None:
            return
        if search.search_plan(ds).way == "exact":
            self.store.pin_serving()

    def _fold_new_rows(self, ds) -> None:
        """Fold committed rows into the live model's ANN index once `FOLD_ROWS` of them are outside it, as a
        small index of their own beside it (the upkeep merges them): queries score at most that many exactly."""
        if self.replacing:
            return
        plan = search.search_plan(ds)
        if plan.way == "ANN" and plan.unindexed >= search.FOLD_ROWS:
            ds.optimize.optimize_indices(num_indices_to_merge=0)

    def remove(self, video_ids: pa.Array) -> int:
        """Delete these videos' rows (all model versions); returns how many rows went."""
        ds = self.store.dataset()
        if ds is None or len(video_ids) == 0:
            return 0
        removed = IdSet([video_ids])     # the index's ids streamed past it: no column of millions held
        gone = pa.concat_arrays([pa.array([], pa.string())] + [
            pc.filter(batch.column(0), pa.array(removed.holds(fingerprints(batch.column(0)))))
            for batch in ds.to_batches(columns=["video_id"])])
        if len(gone) == 0:     # no commit at all: a re-run that changes nothing adds no version
            return 0
        gone = pc.unique(gone)      # a video of several windows (or model versions) has several rows
        result = ds.merge_insert("video_id").when_matched_delete().execute(pa.table({"video_id": gone}))
        return int(result["num_deleted_rows"])

    def publish(self) -> None:
        """Make this run's model version the live one (a no-op when it already is) and drop the old rows."""
        ds = self.store.dataset()
        if ds is None or not self.replacing:
            return
        self.lease.check()
        # Three commits, each a consistent index: the new version goes live while still recorded as pending
        # (so readers keep filtering to its rows), the old rows go, then nothing is pending. A run killed in
        # between leaves this model pending and live, and the next run with it publishes again.
        ds.update_config({LIVE_KEY: self.model.to_json()})
        ds = self.store.dataset()
        ds.delete(f"NOT ({model_rows(self.model)})")
        ds = self.store.dataset()
        ds.update_config({PENDING_KEY: ""})
        self.replacing, self.live = False, self.model

    def record_failures(self, rows: list[dict]) -> None:
        """Record videos that could not be embedded (video_id, error, source): one row per video, whose count,
        last error and last time grow with each failing run, so the table stays the size of what fails."""
        if not rows:
            return
        rows = list({r["video_id"]: r for r in rows}.values())   # a row per video, also of several windows
        when = utc_now()
        new = pa.Table.from_pylist([{**r, "run_id": self.run_id, "model_version": self.model.version,
                                     "first_failed_at": when, "failed_at": when, "failures": 1} for r in rows],
                                   schema=FAILURE_SCHEMA)
        ds = self.store.dataset(table=FAILURES)
        if ds is not None and ds.schema.names != FAILURE_SCHEMA.names:
            ds = _one_row_per_video(ds, self.store.uri(FAILURES), self.store.options)
        if ds is None:
            lance.write_dataset(new, self.store.uri(FAILURES), storage_options=self.store.options)
            return
        ids = ", ".join(sql_text(v) for v in new["video_id"].to_pylist())
        before = ds.to_table(columns=["video_id", "first_failed_at", "failures"], filter=f"video_id IN ({ids})")
        if before.num_rows:
            known = new.select(["video_id"]).join(before, "video_id", join_type="left outer")
            known = known.sort_by([("video_id", "ascending")])
            new = new.sort_by([("video_id", "ascending")])
            seen = pc.is_valid(known["failures"])
            new = new.set_column(new.schema.get_field_index("first_failed_at"), "first_failed_at",
                                 pc.if_else(seen, known["first_failed_at"], new["first_failed_at"]))
            new = new.set_column(new.schema.get_field_index("failures"), "failures",
                                 pc.if_else(seen, pc.add(known["failures"], 1), new["failures"]))
        ds.merge_insert("video_id").when_matched_update_all().when_not_matched_insert_all().execute(new)


def _one_row_per_video(ds, uri: str, options):
    """A failure table of the row-per-failure era, folded once into a row per video (its latest failure)."""
    old = ds.to_table().sort_by([("failed_at", "ascending")])
    rows: dict[str, dict] = {}
    for r in old.to_pylist():
        first = rows.get(r["video_id"])
        rows[r["video_id"]] = {**{k: r[k] for k in ("video_id", "error", "source", "run_id", "model_version",
                                                      "failed_at")},
                               "first_failed_at": first["first_failed_at"] if first else r["failed_at"],
                               "failures": first["failures"] + 1 if first else 1}
    table = pa.Table.from_pylist(list(rows.values()), schema=FAILURE_SCHEMA)
    return lance.write_dataset(table, uri, mode="overwrite", storage_options=options)
