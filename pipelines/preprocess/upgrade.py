"""Turn a shard folder written before the sample table (one JSON catalog per shard) into the current format.

The catalogs' rows become the sample table in one commit (a conversion killed half-way leaves the folder as
it was, and the next one starts again); the catalogs stay where they are and are no longer read. Preprocessing
does this by itself on such a folder, and `tempme upgrade-shards` does it for readers' sake.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import lance
import pyarrow as pa

from pipelines.shards.format import SAMPLE_SCHEMA, SAMPLES, frame_member, legacy_catalogs, sample_table
from pipelines.storage.location import Location, lance_options, retrying

CATALOG_READERS = 32       # catalogs read at once (object-store GETs are latency-bound)
CATALOGS_PER_BATCH = 256   # catalogs turned into one record batch (memory holds one batch)


def upgrade_folder(out: Location) -> int:
    """Write the sample table of a folder that has only catalogs; returns how many catalogs it converted
    (0 when the folder is current or new)."""
    if sample_table(out) is not None:
        return 0
    catalogs = legacy_catalogs(out)
    if catalogs:
        reader = pa.RecordBatchReader.from_batches(SAMPLE_SCHEMA, _batches(catalogs))
        uri = out.child(SAMPLES).uri
        lance.write_dataset(reader, uri, mode="create", storage_options=lance_options(uri))
    return len(catalogs)


def _batches(catalogs: list[Location]) -> Iterator[pa.RecordBatch]:
    with ThreadPoolExecutor(CATALOG_READERS) as pool:
        for first in range(0, len(catalogs), CATALOGS_PER_BATCH):
            part = catalogs[first:first + CATALOGS_PER_BATCH]
            rows = [r for text in pool.map(lambda loc: retrying(loc.read_text), part) for r in _rows(json.loads(text))]
            yield pa.RecordBatch.from_pylist(rows, schema=SAMPLE_SCHEMA)


def _rows(catalog: dict) -> list[dict]:
    """A catalog's samples and failures as rows of the sample table."""
    shard, split = catalog["shard"], catalog["split"]
    rows = []
    for s in catalog["samples"]:
        thumb, size = s["members"][frame_member(0)]
        rows.append({"id": s["id"], "split": split, "shard": shard, "key": s["key"], "source": "",
                     "start": s["span"][0], "end": s["span"][1], "valid": s["valid"], "captions": s["captions"],
                     "thumb_offset": thumb, "thumb_size": size, "stage": "", "error": ""})
    for f in catalog["failures"]:
        rows.append({"id": f["id"], "split": f["split"], "shard": shard, "key": "", "source": f["input"],
                     "start": 0, "end": 0, "valid": 0, "captions": 0, "thumb_offset": 0, "thumb_size": 0,
                     "stage": f["stage"], "error": f["error"]})
    return rows
