"""The video embedding index: immutable part files, one manifest per generation, an atomic pointer.

Layout of an index at ROOT (a local directory, or any URI pyarrow opens, e.g. s3://bucket/index):

    CURRENT                               one line naming the live manifest, e.g. manifests/00000003-<run>.json
    manifests/<generation>-<run>.json     immutable: format, model {name, version, uri}, dim, count, parts
    parts/<model key>/<run>-<session>-<seq>.parquet
                                          immutable rows: video_id, embedding (float32 x dim), model_name,
                                          model_version, model_uri, embedded_at (UTC)
    parts/<model key>/<run>-<session>-<seq>.npy
                                          the same rows' embeddings, in the same order, as one contiguous
                                          float32 matrix, so search can np.load(mmap_mode="r") it
    failures/<run>.parquet                samples a run could not embed, and why
    .lock                                 the writers' lock (local paths and file:// only: IndexStore.writer)

Why this shape: readers follow CURRENT -> manifest -> parts, and every file they can reach is immutable,
so they see the previous complete index or the new complete one, never a mix. A writer commits each part
(.npy, then .parquet as the commit mark) by rename as soon as it is full, so a run killed at any moment
keeps its finished parts; the next run of the same model version adopts them (parts of its model key that
no manifest lists) instead of embedding those videos again. Only the final pointer swap publishes.
Every manifest carries the model that made its vectors: one index holds exactly one model version.

Search is exact: one matrix product per part over the memory-mapped matrices, then argpartition.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.storage import TEMP_MARK, Location

FORMAT = "tempme-index/1"
POINTER = "CURRENT"
PART_ROWS = 50_000      # rows per committed part: bounds the work a killed run can lose
MAX_PARTS = 32          # more parts than this after a run are merged into one (search does one product per part)
MERGED = "-merged"      # suffix of a merge's output part: never adopted by a later run, only listed or deleted


class VideoIndexError(Exception):
    """Base of the index's errors: a location that holds no index or a damaged one."""


class IndexNotFound(VideoIndexError):
    pass


class IndexBusy(VideoIndexError):
    pass


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """The model version an index's vectors come from; `uri` resolves to exactly this version."""
    name: str
    version: str
    uri: str

    @property
    def key(self) -> str:
        """A path-safe folder name for this model version's parts."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.name}-v{self.version}")


@dataclasses.dataclass(frozen=True)
class Part:
    parquet: str   # relative to the index root
    matrix: str
    rows: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    generation: int
    model: ModelRef
    dim: int
    parts: tuple[Part, ...]
    run_id: str
    created_at: str

    @property
    def count(self) -> int:
        return sum(p.rows for p in self.parts)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["parts"] = [dataclasses.asdict(p) for p in self.parts]
        return json.dumps({"format": FORMAT, "count": self.count, **d}, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise VideoIndexError(f"{where}: not a {FORMAT} manifest (format={d.get('format')!r})")
        return cls(generation=int(d["generation"]), model=ModelRef(**d["model"]), dim=int(d["dim"]),
                   parts=tuple(Part(**p) for p in d["parts"]), run_id=d["run_id"], created_at=d["created_at"])


@dataclasses.dataclass(frozen=True)
class Hit:
    video_id: str
    score: float   # cosine similarity (index vectors and queries are L2-normalised)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _Files:
    """Index files by path relative to the index root, on the local disk or an object store
    (pipelines.storage.Location does the filesystem part; this adds streamed atomic writes and mmap)."""

    def __init__(self, location: str | os.PathLike):
        self.root = Location.of(location)
        self.location, self.fs, self.local = self.root.uri, self.root.fs, self.root.is_local

    def at(self, rel: str) -> Location:
        return self.root.child(*rel.split("/")) if rel else self.root

    def path(self, rel: str) -> str:
        return self.at(rel).path

    def exists(self, rel: str) -> bool:
        return self.at(rel).exists()

    def read_text(self, rel: str) -> str:
        return self.at(rel).read_text()

    def write_atomic(self, rel: str, write) -> None:
        """Write through `write(stream)` to a hidden temporary name, then rename: whole or not at all."""
        final = self.at(rel)
        final.parent().make_dirs()
        tmp = final.temp_sibling()
        try:
            with tmp.fs.open_output_stream(tmp.path) as f:
                write(f)
            tmp.fs.move(tmp.path, final.path)
        except BaseException:
            with contextlib.suppress(Exception):
                tmp.delete()
            raise

    def list(self, rel_dir: str, pattern: str = "*") -> list[str]:
        """Relative paths of the files directly in `rel_dir` whose name matches `pattern`, sorted."""
        prefix = f"{rel_dir}/" if rel_dir else ""
        return [prefix + loc.name for loc in self.at(rel_dir).list(pattern)
                if loc.info().type == pafs.FileType.File]

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.at(rel).delete()

    def load_matrix(self, rel: str) -> np.ndarray:
        if self.local:
            return np.load(self.path(rel), mmap_mode="r")
        return np.load(pa.BufferReader(self.at(rel).read_bytes()), allow_pickle=False)

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), columns=columns, filesystem=self.fs, memory_map=self.local)


def _schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("video_id", pa.string()),
        ("embedding", pa.list_(pa.float32(), dim)),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("model_uri", pa.string()),
        ("embedded_at", pa.timestamp("us", tz="UTC")),
    ])


def _part_table(model: ModelRef, ids: Sequence[str], emb: np.ndarray, when: Sequence[dt.datetime]) -> pa.Table:
    n, dim = emb.shape
    flat = pa.array(np.ascontiguousarray(emb, np.float32).reshape(-1))
    return pa.Table.from_arrays([
        pa.array(list(ids), pa.string()),
        pa.FixedSizeListArray.from_arrays(flat, dim),
        pa.array([model.name] * n, pa.string()),
        pa.array([model.version] * n, pa.string()),
        pa.array([model.uri] * n, pa.string()),
        pa.array(list(when), pa.timestamp("us", tz="UTC")),
    ], schema=_schema(dim))


def _write_npy_header(f, rows: int, dim: int) -> None:
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
            "shape": (rows, dim)})


class IndexStore:
    """One index location: read the live manifest, open it for search, or start a writing run."""

    def __init__(self, location: str | os.PathLike):
        self.files = _Files(location)
        self.location = str(location)

    def manifest(self) -> Manifest | None:
        if not self.files.exists(POINTER):
            return None
        rel = self.files.read_text(POINTER).strip()
        return Manifest.from_json(self.files.read_text(rel), f"{self.location}/{rel}")

    def open(self) -> VideoIndex:
        """The live generation, ready to search. A reader so slow that two publishes pass while it opens
        finds its parts collected; it then simply opens the newer generation."""
        for attempt in range(3):
            try:
                manifest = self.manifest()
                if manifest is not None:
                    return VideoIndex(self.files, manifest)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            raise IndexNotFound(f"{self.location}: no embedding index here (no {POINTER} file); "
                                "build one with `tempme embed`")

    def failures(self) -> pa.Table:
        """Every sample any run failed to embed (video_id, error, run_id, ...)."""
        tables = [self.files.read_table(rel) for rel in self.files.list("failures", "[!.]*.parquet")]
        return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})

    @contextlib.contextmanager
    def writer(self, model: ModelRef, run_id: str | None = None, part_rows: int = PART_ROWS,
               max_parts: int = MAX_PARTS) -> Iterator[IndexWriter]:
        """A writing run for `model`, holding the index's lock: IndexBusy while another run writes.

        The lock is an flock on ROOT/.lock, so it holds for local paths and file:// URIs (on one machine, or
        a shared filesystem with working flock). Object stores (s3://, gs://, memory://, ...) offer no atomic
        create-if-absent through pyarrow's filesystems, so there nothing is locked: run one writer per index
        at a time (a single scheduled job); two at once could publish over each other."""
        with self._lock():
            yield IndexWriter(self, model, run_id or uuid.uuid4().hex[:12], part_rows, max_parts)

    @contextlib.contextmanager
    def _lock(self):
        if not self.files.local:   # see writer(): one writer at a time is the operator's contract there
            yield
            return
        import fcntl
        self.files.root.make_dirs()
        with open(self.files.path(".lock"), "w") as fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexBusy(f"{self.location}: another embedding run is writing this index") from None
            yield


class IndexWriter:
    """Adds embeddings for one model version in committed parts; `publish()` makes them live at once."""

    def __init__(self, store: IndexStore, model: ModelRef, run_id: str, part_rows: int, max_parts: int):
        self.store, self.files, self.model, self.run_id = store, store.files, model, run_id
        self.session = uuid.uuid4().hex[:6]    # part names stay unique when a resumed run reuses its run id
        self.part_rows, self.max_parts = part_rows, max_parts
        self._remove_temporaries()
        self.previous = store.manifest()
        same_model = self.previous is not None and self.previous.model.version == model.version \
            and self.previous.model.name == model.name
        self.base_parts: tuple[Part, ...] = self.previous.parts if same_model else ()
        self.dim: int | None = self.previous.dim if same_model else None
        self.done_ids: set[str] = set()
        for part in self.base_parts:
            self.done_ids.update(self._ids(part))
        self.adopted_parts = self._adopt_unpublished_parts()
        self.new_parts: list[Part] = []
        self._buffer: list[tuple[list[str], np.ndarray, list[dt.datetime]]] = []
        self._buffered = 0
        self._failures: list[dict] = []

    @property
    def adopted_count(self) -> int:
        """Rows of the parts adopted from a killed run (until `publish()` makes them part of the index)."""
        return sum(p.rows for p in self.adopted_parts)

    def _remove_temporaries(self) -> None:
        folders = ["", "manifests", "failures", f"parts/{self.model.key}"]
        for folder in folders:
            for rel in self.files.list(folder, f"*{TEMP_MARK}*"):
                self.files.delete(rel)

    def _ids(self, part: Part) -> list[str]:
        return self.files.read_table(part.parquet, ["video_id"]).column(0).to_pylist()

    def _adopt_unpublished_parts(self) -> tuple[Part, ...]:
        """Committed parts of this model version that the live manifest does not list: a killed run's work.
        Stale ones (a merge's output never published, or sources a published merge already holds) are deleted."""
        listed = {p.parquet for p in self.base_parts}
        adopted = []
        for rel in self.files.list(f"parts/{self.model.key}", "[!.]*.parquet"):
            if rel in listed:
                continue
            part = Part(rel, rel[: -len(".parquet")] + ".npy", 0)
            ids = [] if rel.endswith(MERGED + ".parquet") else self._ids(part)
            if not ids or not self.done_ids.isdisjoint(ids):
                self._delete_part(part)
                continue
            rows = self.files.load_matrix(part.matrix).shape[0]
            if rows != len(ids):
                raise VideoIndexError(f"{self.store.location}/{rel}: {len(ids)} rows but {rows} in {part.matrix}")
            self.done_ids.update(ids)
            adopted.append(dataclasses.replace(part, rows=rows))
        return tuple(adopted)

    def _delete_part(self, part: Part) -> None:
        self.files.delete(part.parquet)   # the commit mark goes first
        self.files.delete(part.matrix)

    def add(self, video_ids: Sequence[str], embeddings: np.ndarray, embedded_at: dt.datetime | None = None) -> int:
        """Buffer embeddings of videos not yet in the index; commit full parts. Returns how many were new."""
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(video_ids):
            raise ValueError(f"embeddings of shape {embeddings.shape} do not match {len(video_ids)} video ids")
        if self.dim is None:
            self.dim = embeddings.shape[1]
        elif embeddings.shape[1] != self.dim:
            raise ValueError(f"embedding width {embeddings.shape[1]} differs from the index's {self.dim}")
        keep = []
        for i, vid in enumerate(video_ids):
            if vid not in self.done_ids:
                self.done_ids.add(vid)
                keep.append(i)
        if keep:
            when = embedded_at or utc_now()
            self._buffer.append(([video_ids[i] for i in keep], embeddings[keep], [when] * len(keep)))
            self._buffered += len(keep)
            while self._buffered >= self.part_rows:
                self._commit_part(self.part_rows)
        return len(keep)

    def fail(self, video_id: str, error: str, source: str = "") -> None:
        self._failures.append({"video_id": video_id, "source": source, "error": error})

    def _commit_part(self, rows: int) -> None:
        ids, emb, when = [], [], []
        while len(ids) < rows and self._buffer:
            b_ids, b_emb, b_when = self._buffer.pop(0)
            take = rows - len(ids)
            ids += b_ids[:take]; emb.append(b_emb[:take]); when += b_when[:take]
            if take < len(b_ids):
                self._buffer.insert(0, (b_ids[take:], b_emb[take:], b_when[take:]))
        self._buffered -= len(ids)
        matrix = np.concatenate(emb)
        stem = f"parts/{self.model.key}/{self.run_id}-{self.session}-{len(self.new_parts):05d}"
        self.files.write_atomic(stem + ".npy", lambda f: np.lib.format.write_array(f, matrix))
        table = _part_table(self.model, ids, matrix, when)
        self.files.write_atomic(stem + ".parquet", lambda f: pq.write_table(table, f, compression="zstd"))
        self.new_parts.append(Part(stem + ".parquet", stem + ".npy", len(ids)))

    def publish(self) -> Manifest | None:
        """Commit what is buffered, then swap the pointer to a manifest of every part of this model version.
        Returns the live manifest (None when nothing has ever been embedded)."""
        if self._buffered:
            self._commit_part(self._buffered)
        if self._failures:
            table = pa.Table.from_pylist([{**f, "run_id": self.run_id, "model_version": self.model.version,
                                           "failed_at": utc_now()} for f in self._failures])
            self.files.write_atomic(f"failures/{self.run_id}.parquet", lambda f: pq.write_table(table, f))
            self._failures = []
        changed = self.new_parts or self.adopted_parts or (self.previous and not self.base_parts)
        if not changed:
            return self.previous
        parts = [*self.base_parts, *self.adopted_parts, *self.new_parts]
        if not parts:
            return self.previous
        merged_away = []
        if len(parts) > self.max_parts:
            merged_away = [p for p in parts if p not in self.base_parts]
            parts = [self._merge(parts)]
        manifest = Manifest(generation=self._next_generation(), model=self.model, dim=int(self.dim),
                            parts=tuple(parts), run_id=self.run_id, created_at=utc_now().isoformat())
        rel = f"manifests/{manifest.generation:08d}-{self.run_id}.json"
        text = manifest.to_json()
        self.files.write_atomic(rel, lambda f: f.write(text.encode()))
        self.files.write_atomic(POINTER, lambda f: f.write(rel.encode() + b"\n"))
        for part in merged_away:          # listed by no manifest; the next run would delete them as stale anyway
            self._delete_part(part)
        self._collect_garbage(keep=[manifest, self.previous])
        self.previous, self.base_parts, self.adopted_parts, self.new_parts = manifest, manifest.parts, (), []
        return manifest

    def _merge(self, parts: list[Part]) -> Part:
        """One part holding all rows of `parts`, streamed (never the whole matrix in memory at once)."""
        rows = sum(p.rows for p in parts)
        stem = f"parts/{self.model.key}/{self.run_id}-{self.session}-{len(self.new_parts):05d}{MERGED}"

        def write_matrix(f):
            _write_npy_header(f, rows, int(self.dim))
            for p in parts:
                f.write(np.ascontiguousarray(self.files.load_matrix(p.matrix), np.float32).tobytes())

        def write_table(f):
            with pq.ParquetWriter(f, _schema(int(self.dim)), compression="zstd") as w:
                for p in parts:
                    w.write_table(self.files.read_table(p.parquet))

        self.files.write_atomic(stem + ".npy", write_matrix)
        self.files.write_atomic(stem + ".parquet", write_table)
        return Part(stem + ".parquet", stem + ".npy", rows)

    def _next_generation(self) -> int:
        gens = [int(rel.split("/")[-1].split("-")[0]) for rel in self.files.list("manifests", "[!.]*.json")]
        return max(gens, default=0) + 1

    def _collect_garbage(self, keep: list[Manifest | None]) -> None:
        """Delete manifests other than the new and the previously live one, with parts only they listed.
        Readers still on the previous generation keep working; unlisted parts (a killed run's) stay for adoption."""
        kept_names = {f"{m.generation:08d}-{m.run_id}.json" for m in keep if m}
        kept_files = {f for m in keep if m for p in m.parts for f in (p.parquet, p.matrix)}
        for rel in self.files.list("manifests", "[!.]*.json"):
            if rel.split("/")[-1] in kept_names:
                continue
            old = Manifest.from_json(self.files.read_text(rel), rel)
            for p in old.parts:
                for f in (p.parquet, p.matrix):
                    if f not in kept_files:
                        self.files.delete(f)
            self.files.delete(rel)


class VideoIndex:
    """A live manifest opened for search: per part, its video ids (Arrow) and its matrix (memory-mapped)."""

    def __init__(self, files: _Files, manifest: Manifest):
        self.manifest = manifest
        self._parts = [(files.read_table(p.parquet, ["video_id"]).column(0), files.load_matrix(p.matrix))
                       for p in manifest.parts]
        for (ids, mat), p in zip(self._parts, manifest.parts):
            if len(ids) != mat.shape[0] or mat.shape[1] != manifest.dim:
                raise VideoIndexError(f"{files.location}/{p.matrix}: shape {mat.shape} does not match "
                                  f"{len(ids)} ids x {manifest.dim}")

    @property
    def model(self) -> ModelRef:
        return self.manifest.model

    def __len__(self) -> int:
        return self.manifest.count

    def video_ids(self) -> list[str]:
        return [v for ids, _ in self._parts for v in ids.to_pylist()]

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Top-k videos by cosine for each row of `queries` [n, dim] (or one vector [dim])."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if q.shape[1] != self.manifest.dim:
            raise ValueError(f"query width {q.shape[1]} differs from the index's {self.manifest.dim}")
        k = min(k, len(self))
        if k <= 0:
            return [[] for _ in range(len(q))]
        scores, where = [], []
        for pi, (_, mat) in enumerate(self._parts):
            s = mat @ q.T                                    # [rows, n]: the one product over this part
            kk = min(k, len(s))
            top = np.argpartition(s, len(s) - kk, axis=0)[len(s) - kk:]
            scores.append(np.take_along_axis(s, top, axis=0))
            where.append(np.stack([np.full_like(top, pi), top], axis=-1))
        scores, where = np.concatenate(scores), np.concatenate(where)   # [candidates, n], [candidates, n, 2]
        results = []
        for j in range(q.shape[0]):
            order = np.argsort(-scores[:, j], kind="stable")[:k]
            results.append([Hit(self._parts[pi][0][int(row)].as_py(), float(scores[c, j]))
                            for c, (pi, row) in zip(order, where[order, j])])
        return results
