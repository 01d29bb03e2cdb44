"""Sets of millions of video ids at 16 bytes an id: sorted 128-bit fingerprints, searched with numpy.

A driver that must tell which of ten million videos are done, removed or new cannot hold the ids as Python
strings (70+ bytes each) nor build an Arrow hash table per batch of them; it fingerprints each batch as it
streams by and binary-searches a sorted array. Two ids of a corpus of n share a fingerprint with odds
about n^2 / 2^129.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

FINGERPRINT = np.dtype([("a", "<u8"), ("b", "<u8")])
CHUNK = 1 << 20          # fingerprints looked up at a time
_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F)   # odd: two independent polynomial hashes


def fingerprints(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """128 bits of each id: two 64-bit polynomial hashes of its UTF-8 bytes, each mixed by splitmix64."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = ids.cast(pa.large_string())
    n = len(ids)
    out = np.zeros(n, FINGERPRINT)
    if n == 0:
        return out
    offsets = np.frombuffer(ids.buffers()[1], np.int64)[ids.offset: ids.offset + n + 1]
    lengths = np.diff(offsets)
    data = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0]: offsets[-1]].astype(np.uint64) + np.uint64(1)
    position = np.arange(len(data)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    starts = (offsets[:-1] - offsets[0])[lengths > 0]
    for name, multiplier in zip(FINGERPRINT.names, _MULTIPLIERS):
        powers = np.cumprod(np.full(int(lengths.max()) + 1, multiplier, np.uint64))
        h = np.full(n, np.uint64(multiplier))
        if len(data):
            h[lengths > 0] = np.add.reduceat(data * powers[position], starts)
        out[name] = _mix(h ^ lengths.astype(np.uint64))
    return out


def _sorted(prints: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return prints["a"][order], prints["b"][order]


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class IdSet:
    """The ids of `batches` (Arrow string arrays, streamed), as sorted fingerprints."""

    def __init__(self, batches: Iterable[pa.Array | pa.ChunkedArray]):
        found = [fingerprints(b) for b in batches]
        prints = np.concatenate(found) if found else np.zeros(0, FINGERPRINT)
        del found
        self.high, self.low = _sorted(prints, np.lexsort((prints["b"], prints["a"])))

    @classmethod
    def ordering(cls, prints: np.ndarray) -> tuple[IdSet, np.ndarray]:
        """The set of these fingerprints, and the order that sorts them (set position -> position in
        `prints`), for keeping other columns beside the set."""
        order = np.lexsort((prints["b"], prints["a"]))
        found = cls([])
        found.high, found.low = _sorted(prints, order)
        return found, order

    def __len__(self) -> int:
        return len(self.high)

    def holds(self, prints: np.ndarray) -> np.ndarray:
        """Which of these fingerprints (`fingerprints(ids)`) are in the set."""
        return self.find(prints) >= 0

    def find(self, prints: np.ndarray) -> np.ndarray:
        """Where each fingerprint first sits in the set's sorted order (-1 where it is not in the set), so that
        arrays kept in that order (`order`) can be looked up by id."""
        if len(prints) > CHUNK:   # the search's temporaries are several times its input: bound them
            return np.concatenate([self.find(prints[i:i + CHUNK]) for i in range(0, len(prints), CHUNK)])
        found = np.full(len(prints), -1, np.int64)
        at = np.searchsorted(self.high, prints["a"]) if len(self.high) else np.zeros(0, np.int64)
        while len(at):       # along a run of equal high halves (almost always one entry, or none)
            inside = at < len(self.high)
            same = np.zeros(len(prints), bool)
            same[inside] = self.high[at[inside]] == prints["a"][inside]
            if not same.any():
                break
            hit = same & (found < 0)
            hit[hit] = self.low[at[hit]] == prints["b"][hit]
            found[hit] = at[hit]
            at = np.where(same & (found < 0), at + 1, len(self.high))
        return found
