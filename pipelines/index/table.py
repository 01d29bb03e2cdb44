"""One index location: its tables, the version a reader opens, a writing run, and the operators' commands."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os

import lance
import pyarrow as pa

from pipelines.index.lease import WriterLease
from pipelines.index.rows import (
    FAILURES,
    LEASE,
    SERVING_TAG,
    VIDEOS,
    IndexNotFound,
    LegacyIndex,
    ModelRef,
    VideoIndexError,
    live_model,
    model_rows,
    pending_model,
)
from pipelines.index.search import VideoIndex, refresh_ann, search_plan
from pipelines.index.writer import IndexWriter
from pipelines.storage.location import Location, lance_options

LEGACY_POINTER = "CURRENT"                # what the Parquet index before Lance kept at its root
RETENTION = dt.timedelta(days=7)          # old versions kept this long for pinned readers
VERSIONS_SHOWN = 10                      # latest versions `info` describes

_session = None


def shared_session() -> lance.Session:
    """One Lance session per process: what it caches of a table (opened indexes, file metadata) serves every
    version opened after it, so a replica that moves to a new version finds its index warm."""
    global _session
    if _session is None:
        _session = lance.Session()
    return _session


class IndexStore:
    """One index location: its tables, the version a reader opens, and the operators' commands."""

    def __init__(self, location: str | os.PathLike):
        self.root = Location.of(location)
        self.location = self.root.uri

    def uri(self, table: str) -> str:
        return self.root.child(table).uri

    @property
    def options(self) -> dict[str, str] | None:
        return lance_options(self.location)

    def check(self) -> None:
        """Refuse a location that holds an index of the old format or something that is not an index."""
        if self.root.child(LEGACY_POINTER).exists():
            raise LegacyIndex(f"{self.location} holds an embedding index of the format before Lance; re-embed "
                              f"into a new location (`tempme embed --out NEW ...`) and delete this one")
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise VideoIndexError(f"{self.location} is a file, not an index folder")
        strangers = sorted(loc.name for loc in self.root.list()
                           if loc.name not in (VIDEOS, FAILURES, LEASE) and not loc.name.startswith("."))
        if strangers:
            raise VideoIndexError(f"{self.location} holds other things ({', '.join(strangers[:5])}), not an "
                                  f"embedding index; give --out an empty or new folder")

    def dataset(self, version: int | None = None, table: str = VIDEOS):
        """The Lance table (at `version`, default the latest), or None when none was ever committed."""
        if not self.root.child(table, "_versions").exists():   # data files alone are no commit yet
            return None
        try:
            return lance.dataset(self.uri(table), version=version, storage_options=self.options,
                                 session=shared_session())
        except ValueError as e:
            if version is not None and "not found" in str(e).lower():
                raise VideoIndexError(f"{self.location}: no version {version} (see `tempme index info "
                                      f"{self.location}`)") from None
            raise

    def open(self, version: int | None = None, prewarm: bool = False):
        """The index at `version` (default: the one readers search, the latest unless a new model version or
        its ANN index is being brought in), ready to search; `prewarm`: with its ANN index loaded (a service)."""
        return VideoIndex(self._existing(self.serving() if version is None else version), self.location, prewarm)

    def serving(self) -> int | None:
        """The version pinned for readers while a new model version comes in (None: they follow the latest)."""
        return self.pinned_version(self.dataset())

    @staticmethod
    def pinned_version(ds) -> int | None:
        """Of an opened table: its pinned version, if any (one read of its tags)."""
        tag = ds.tags.list().get(SERVING_TAG) if ds is not None else None
        return tag["version"] if tag else None

    def pin_serving(self) -> None:
        """Keep readers on the latest version, whatever is committed next, until `release_serving`."""
        ds = self.dataset()
        if ds is not None and self.serving() is None:
            ds.tags.create(SERVING_TAG, ds.version)

    def release_serving(self) -> bool:
        """Let readers follow the latest version again, once no model version is pending; returns whether the
        pin went. Call it after the live rows' ANN index is built (`refresh_ann`); it stays while the latest
        version cannot be searched."""
        ds = self.dataset()
        if ds is None or self.serving() is None or pending_model(ds) is not None or search_plan(ds).way == "not ready":
            return False
        ds.tags.delete(SERVING_TAG)
        return True

    @contextlib.contextmanager
    def writer(self, model: ModelRef, run_id: str):
        """An `IndexWriter` for `model`, holding the index's writer lease (`IndexBusy` while another run has it)."""
        self.check()
        if self.root.is_local:
            self.root.make_dirs()
        with WriterLease(self, run_id) as lease:
            yield IndexWriter(self, model, run_id, lease)

    def failures(self) -> pa.Table:
        """Every sample any run failed to embed (video_id, error, source, run_id, model_version, failed_at)."""
        ds = self.dataset(table=FAILURES)
        return ds.to_table() if ds is not None else pa.table({})

    def info(self, versions: int = VERSIONS_SHOWN) -> dict:
        """Rows, models, and for the last `versions` versions how a query to each is answered (exact, ANN and
        how much of it the index covers, or not searchable yet), for `tempme index info`."""
        ds = self._existing()
        live, pending = live_model(ds), pending_model(ds)
        failures = self.dataset(table=FAILURES)
        serving = self.pinned_version(ds)
        return {"location": self.location, "version": ds.version, "serving": serving,
                "rows": ds.count_rows(model_rows(live)),
                "model": dataclasses.asdict(live),
                "pending": dataclasses.asdict(pending) if pending else None,
                "search": search_plan(ds).describe(),
                "versions": [self._version_info(v, ds) for v in ds.versions()[-versions:]],
                "fragments": len(ds.get_fragments()),
                "failures": failures.count_rows() if failures is not None else 0}

    def _version_info(self, version: dict, latest) -> dict:
        ds = latest if version["version"] == latest.version else self.dataset(version["version"])
        model = live_model(ds)
        return {"version": version["version"], "timestamp": str(version["timestamp"]),
                "rows": int(version.get("metadata", {}).get("total_rows", 0)),
                "model": f"{model.name} v{model.version}" if model else None,
                "search": search_plan(ds).describe() if model else "not an index yet"}

    def compact(self) -> dict:
        """Merge small fragments (one per embedding batch) into large ones, then keep the ANN index fit (fold
        new rows and delta indexes in, or build it) and let readers onto the latest version if they wait."""
        metrics = self._existing().optimize.compact_files()
        return {"fragments_removed": metrics.fragments_removed, "fragments_added": metrics.fragments_added,
                **self.refresh_search()}

    def refresh_search(self, kind: str | None = None) -> dict:
        """Keep the latest version's ANN index fit (`refresh_ann`: build, fold in, retrain), then let readers
        pinned to an older version onto it. What the embedding job does after each run."""
        ann = refresh_ann(self._existing(), kind=kind)
        return {"ann": ann, "readers_moved_on": self.release_serving()}

    def cleanup(self, older_than: dt.timedelta = RETENTION) -> dict:
        """Delete table versions older than `older_than` (never the latest) and the files only they used."""
        removed = {}
        for table in (VIDEOS, FAILURES, LEASE):
            ds = self.dataset(table=table)
            if ds is not None:
                stats = ds.cleanup_old_versions(older_than=older_than, error_if_tagged_old_versions=False)
                removed[table] = {"versions": stats.old_versions, "bytes": stats.bytes_removed}
        return removed

    def _existing(self, version: int | None = None):
        """The table at `version` (default the latest), refused unless it names a live model."""
        self.check()
        ds = self.dataset(version)
        if ds is None or live_model(ds) is None:
            raise IndexNotFound(f"{self.location}: no embedding index here; build one with `tempme embed`")
        return ds

