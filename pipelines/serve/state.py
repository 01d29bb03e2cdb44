"""What one search replica holds and does, apart from HTTP: the open index version with its model, following
new versions, checking queries, answering them and reading thumbnails.

A replica answers every query from one snapshot (`TextSearch`: one index version and the model that embedded
it). A background thread looks for a newer version every `refresh_s` seconds and swaps in a new snapshot,
built beside the old one, by one assignment: a query that started keeps its snapshot to the end, so no answer
mixes two index versions or two model versions. An index that cannot be opened (a store that does not answer,
a folder with no index yet) leaves the replica up, answering 503 until it can.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from urllib.parse import quote

from pipelines.embed.search import TextSearch
from pipelines.index.search import Hit
from pipelines.serve.options import ServeOptions
from pipelines.shards.reader import current_thumbnail
from pipelines.storage.location import Location, retrying
from tempme.errors import UserError

MAX_QUERY_CHARS = 300     # CLIP reads 77 tokens; a longer text is cut by the tokenizer anyway
MAX_K = 100
DEFAULT_K = 10
MAX_THUMBNAILS_KEPT = 10_000   # where the thumbnails of recent hits lie, so that the page's requests look up nothing
MOMENTS_SHOWN = 2               # next best windows a hit of a video cut into moments also names
log = logging.getLogger(__name__)


class BadQuery(UserError):
    """A query the service refuses (HTTP 400)."""


class Unavailable(RuntimeError):
    """The index cannot be searched now (HTTP 503)."""


def parse_query(q: str | None, k: str | int | None) -> tuple[str, int]:
    """(query, k) from the request's parameters, or BadQuery saying what is wrong."""
    text = (q or "").strip()
    if not text:
        raise BadQuery("q is empty: give a text to search for, e.g. /search?q=a+dog+running")
    if len(text) > MAX_QUERY_CHARS:
        raise BadQuery(f"q is {len(text)} characters long; at most {MAX_QUERY_CHARS}")
    try:
        count = DEFAULT_K if k in (None, "") else int(k)
    except (TypeError, ValueError):
        raise BadQuery(f"k must be a whole number from 1 to {MAX_K}, got {k!r}") from None
    if not 1 <= count <= MAX_K:
        raise BadQuery(f"k must be from 1 to {MAX_K}, got {count}")
    return text, count


class SearchState:
    """The replica's current snapshot and the thread that keeps it at the newest index version."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.snapshot: TextSearch | None = None
        self.problem = "the index has not been opened yet"
        self.opened_at: float | None = None
        self._thumbnails: dict[tuple, tuple[str, int, int]] = {}   # of the hits answered from the snapshot
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="index-follower", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def refresh(self) -> bool:
        """Move to the newest index version if there is one; True when the snapshot changed."""
        current = self.snapshot
        try:
            if current is None:
                fresh = TextSearch(self.options.index, tracking_uri=self.options.tracking_uri,
                                   precision=self.options.precision, prewarm=True)
            elif current.latest_version() != current.index.version:
                fresh = current.reopened()
            else:
                return False
        except Exception as err:   # the store, the registry or the model: keep what is served, say why
            self.problem = f"index {self.options.index} cannot be opened: {type(err).__name__}: {err}"
            if current is None:
                log.warning("%s", self.problem)
            return False
        self.snapshot, self.opened_at, self.problem = fresh, time.time(), ""
        self._thumbnails = {}
        log.info("serving %s version %d (%s v%s, %d videos)", self.options.index, fresh.index.version,
                 fresh.model_ref.name, fresh.model_ref.version, len(fresh.index))
        return True

    def _follow(self) -> None:
        while not self._stop.wait(self.options.refresh_s):
            self.refresh()

    def current(self) -> TextSearch:
        snapshot = self.snapshot
        if snapshot is None:
            raise Unavailable(self.problem)
        return snapshot

    def health(self) -> dict:
        snapshot = self.current()
        return {"status": "ok", "index": self.options.index, "index_version": snapshot.index.version,
                "model": {"name": snapshot.model_ref.name, "version": snapshot.model_ref.version},
                "videos": len(snapshot.index), "search": snapshot.index.kind}

    def search(self, q: str | None, k: str | int | None) -> dict:
        return self.search_many([parse_query(q, k)])[0]

    def search_many(self, requests: list[tuple[str, int]]) -> list[dict]:
        """Answers to checked (query, k) pairs from one snapshot: the text encoder and the index see them as one
        batch (the service gathers concurrent requests into it)."""
        snapshot = self.current()           # one snapshot for the whole answer
        started = time.perf_counter()
        try:
            found = snapshot.search([text for text, _ in requests], max(count for _, count in requests),
                                    MOMENTS_SHOWN)
        except OSError as err:
            raise Unavailable(f"index {self.options.index} cannot be read: {err}") from err
        took = round(1000 * (time.perf_counter() - started), 2)
        version, model = snapshot.index.version, {"name": snapshot.model_ref.name,
                                                  "version": snapshot.model_ref.version}
        thumbnails = self._thumbnails if snapshot is self.snapshot else {}
        answers = []
        for (text, count), hits in zip(requests, found):
            hits = hits[:count]
            thumbnails.update(((h.video_id, h.start), h.thumbnail) for h in hits if h.thumbnail)
            answers.append({"query": text, "k": count, "index_version": version, "model": model, "took_ms": took,
                            "batch": len(requests), "hits": [_hit_json(h, version) for h in hits]})
        while len(thumbnails) > MAX_THUMBNAILS_KEPT:
            thumbnails.pop(next(iter(thumbnails)))
        return answers

    def thumbnail(self, video_id: str, start: float | None = None) -> bytes | None:
        """The JPEG of one frame of a live video (of its window starting at `start`, seconds) from its shard, or
        None when the index has no such video."""
        where = self._thumbnails.get((video_id, start))      # a hit just answered: no lookup in the index
        if where is None:
            hit = self.current().index.find(video_id, start)
            if hit is None or hit.thumbnail is None:
                return None
            where = hit.thumbnail
        try:
            try:
                return _read_bytes(*where)
            except FileNotFoundError:     # its shard was compacted since it was embedded: look it up
                moved = current_thumbnail(where[0], video_id)
                return _read_bytes(*moved) if moved else None
        except OSError as err:
            raise Unavailable(f"the shard of {video_id} cannot be read: {err}") from err


def _hit_json(hit: Hit, version: int) -> dict:
    """A hit as the page and API clients read it: a video cut into moments also says when (seconds) the
    matching window is, and its next best ones; the thumbnail is a frame of that window."""
    at = "" if hit.start is None else f"&t={hit.start:g}"
    found = {"video_id": hit.video_id, "score": round(hit.score, 6), "caption": hit.caption,
             "thumbnail": f"thumbnail/{quote(hit.video_id, safe='')}?v={version}{at}" if hit.thumbnail else None,
             "source": hit.source or None}
    if hit.start is not None:
        found.update(start=hit.start, end=hit.end,
                     moments=[{"start": a, "end": b, "score": round(s, 6)} for a, b, s in hit.moments])
    return found


@functools.lru_cache(maxsize=4096)
def _read_bytes(uri: str, offset: int, size: int) -> bytes:
    loc = Location.of(uri)

    def read() -> bytes:
        with loc.fs.open_input_file(loc.path) as f:
            return f.read_at(size, offset)

    return retrying(read)
