"""Every video the inputs list, as planning holds them: spooled to a local file, fingerprinted, counted.

A manifest of ten million rows is read a batch at a time (`sources`). Its good rows go to a local Arrow file
(`RowSpool`), read back in batches where needed, and planning keeps 17 bytes a row in memory: the id's
fingerprint and whether the row counts (the first row of its id, in a chosen split).
An id given twice is found with one sort of the fingerprints: its later rows become failures.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.preprocess.sources import INPUT_SCHEMA, Failure, Rows, VideoInput, validate
from pipelines.preprocess.spool import ArraySpool, RowSpool
from pipelines.shards.id_set import FINGERPRINT, fingerprints
from pipelines.storage.location import spool_dir


@dataclass
class Inputs:
    rows: RowSpool                  # every good row in input order (`INPUT_SCHEMA`)
    prints: np.ndarray              # the fingerprint of each row's id
    counted: np.ndarray             # bool per row: the first of its id, in a chosen split
    failures: list[Failure]         # the rows rejected, each with why
    splits: dict[str, int]          # good rows per split (all splits)
    buckets: dict[str, tuple[str, str]]   # object-store bucket -> (what, URI) of the first video in it
    spool: tempfile.TemporaryDirectory = field(repr=False)   # holds the spooled files while this lives

    def __len__(self) -> int:
        return int(self.counted.sum())

    def videos(self, rows: np.ndarray) -> list[VideoInput]:
        """The rows at these positions as objects (for a few rows: messages and tests)."""
        return [VideoInput(r["id"], r["uri"], tuple(r["captions"]), r["split"], r["origin"])
                for r in self.rows.take(rows).to_pylist()]


def collect_inputs(batches: Iterable[Rows], splits: tuple[str, ...] | None = None) -> Inputs:
    """Check every batch, spool its good rows, and find the ids given twice. With `splits`, only rows of
    those splits count, and only their failures are kept."""
    spool = tempfile.TemporaryDirectory(dir=spool_dir(), prefix=f"{os.getpid()}-inputs-")
    spooled = RowSpool(os.path.join(spool.name, "inputs.arrow"), INPUT_SCHEMA)
    prints = ArraySpool(os.path.join(spool.name, "prints"), FINGERPRINT)
    chosen = ArraySpool(os.path.join(spool.name, "chosen"), bool)
    failures, counts, buckets = [], Counter(), {}
    for batch in batches:
        good, bad = validate(batch)
        failures += bad
        spooled.write(good)
        prints.append(fingerprints(good["id"]))
        if splits:
            chosen.append(pc.is_in(good["split"], value_set=pa.array(list(splits))).to_numpy(zero_copy_only=False))
        counts.update({c["values"]: c["counts"] for c in pc.value_counts(good["split"]).to_pylist()})
        _first_in_buckets(good, buckets)
    spooled.close()
    found = prints.read()
    first, again = _first_of_each(found)
    failures += _duplicates(spooled, again)
    if splits:
        first &= chosen.read()
        failures = [f for f in failures if f.split in splits]
    return Inputs(spooled, found, first, failures, dict(counts), buckets, spool)


def _first_of_each(prints: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(which rows are the first of their id, [(a later row, the first row of its id)])."""
    first = np.ones(len(prints), bool)
    if len(prints) < 2:
        return first, []
    order = np.lexsort((prints["b"], prints["a"]))     # stable: equal ids stay in input order
    same = np.ones(len(prints) - 1, bool)
    for half in FINGERPRINT.names:                      # one sorted half at a time: less memory at once
        ordered = prints[half][order]
        same &= ordered[1:] == ordered[:-1]
        del ordered
    if not same.any():
        return first, []
    later = np.flatnonzero(same) + 1                   # sorted positions of the rows that repeat an id
    run_start = np.maximum.accumulate(np.where(np.concatenate([[False], same]), 0, np.arange(len(prints))))
    first[order[later]] = False
    return first, list(zip(order[later].tolist(), order[run_start[later]].tolist()))


def _duplicates(spooled: RowSpool, again: list[tuple[int, int]]) -> list[Failure]:
    if not again:
        return []
    rows = spooled.take(np.array([r for pair in again for r in pair])).to_pylist()
    return [Failure(row["uri"], row["id"], row["split"], "source",
                    f"{row['origin']}: duplicate id {row['id']!r} (first given at {first['origin']})")
            for row, first in zip(rows[0::2], rows[1::2])]


def _first_in_buckets(good: pa.Table, buckets: dict[str, tuple[str, str]]) -> None:
    """Note the first video of each object-store bucket not seen yet (to check the buckets before any work)."""
    remote = pc.and_(pc.match_substring(good["uri"], "://"), pc.invert(pc.starts_with(good["uri"], "file://")))
    if not pc.any(remote).as_py():
        return
    rows = good.filter(remote)
    names = pc.struct_field(pc.extract_regex(rows["uri"], r"^[^:]*://(?P<bucket>[^/]*)"), "bucket")
    for name in pc.unique(names).to_pylist():
        if name not in buckets:
            row = rows.slice(pc.index(names, name).as_py(), 1).to_pylist()[0]
            buckets[name] = (f"video {row['id']!r} ({row['origin']}):", row["uri"])
