"""Write one shard as its videos are decoded, then its catalog, which marks the shard finished.

Samples are appended to a spool file as they come (memory holds one sample at a time): on a local disk the
spool is a hidden temporary name beside the shard, renamed when complete; on an object store it is a local
temporary file uploaded once under the shard's final name (object stores have no rename). The catalog
(`_index/<shard>.json`) is written last: a run killed before it leaves no finished shard, and the next run
writes that shard again from the same plan (identical bytes, the same name). Unfinished temporary files on
a local disk are hidden and removed by the next run.
"""
from __future__ import annotations

import json
import os
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor

from pipelines.preprocess.layout import FORMAT, CATALOG_DIR, OPTIONS, PLANS_DIR, catalog_name
from pipelines.preprocess.plan import ShardPlan
from pipelines.storage import TEMP_MARK, Location, retrying

END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)
CATALOG_READERS = 32        # catalogs read at once (object-store GETs are latency-bound)


class ShardWriter:
    """Collects one shard's decoder results (`make_sample` rows, in plan order) and commits the shard."""

    def __init__(self, out: Location, plan: ShardPlan):
        self.out, self.plan, self.shard = out, plan, out.child(plan.name)
        if self.shard.is_local:
            self.spool_path = self.shard.temp_sibling().path
        else:
            handle, self.spool_path = tempfile.mkstemp(suffix=".tar")
            os.close(handle)
        self.spool = open(self.spool_path, "wb")
        self.samples: list[dict] = []
        self.failures: list[dict] = []
        self.offset = 0

    def add(self, r: dict) -> None:
        if r["error"]:
            self.failures.append({"input": r["uri"], "id": r["id"], "split": r["split"],
                                  "stage": r["stage"], "error": r["error"]})
            return
        members = {name: [self.offset + o, size] for name, (o, size) in json.loads(r["members"]).items()}
        self.samples.append({"key": r["key"], "id": r["id"], "captions": r["captions"], "valid": r["valid"],
                             "span": [self.offset, self.offset + len(r["fragment"])], "members": members})
        self.spool.write(r["fragment"])
        self.offset += len(r["fragment"])

    def commit(self) -> dict:
        """Put the shard in place (if any video gave a sample), then its catalog; returns the catalog."""
        size = 0
        try:
            if self.samples:  # a shard whose videos all failed leaves only its catalog
                size = self.offset + len(END_OF_ARCHIVE)
                size += -size % tarfile.RECORDSIZE
                self.spool.write(b"\0" * (size - self.offset))
                self.spool.close()
                if self.shard.is_local:
                    os.replace(self.spool_path, self.shard.path)
                else:
                    self.shard.put_file(self.spool_path)
        finally:
            self.discard()
        catalog = {"format": FORMAT, "shard": self.plan.name, "split": self.plan.split, "bytes": size,
                 "frames": sum(s["valid"] for s in self.samples), "planned": self.plan.ids,
                 "samples": self.samples, "failures": self.failures}
        self.out.child(CATALOG_DIR, catalog_name(self.plan.name)).write_atomic(
            json.dumps(catalog, ensure_ascii=False).encode())
        return catalog

    def discard(self) -> None:
        self.spool.close()
        if os.path.exists(self.spool_path):
            os.remove(self.spool_path)


def write_shard(out: Location, plan: ShardPlan, results: list[dict]) -> dict:
    """Write `plan`'s shard from its decoder results (one per video, any order); returns its catalog."""
    writer = ShardWriter(out, plan)
    for r in sorted(results, key=lambda r: r["pos"]):
        writer.add(r)
    return writer.commit()


def finished_shards(out: Location) -> set[str]:
    """Names of the shards whose catalog is written (one listing, no read of any catalog)."""
    return {loc.name.removesuffix(".json") + ".tar"
            for loc in retrying(lambda: out.child(CATALOG_DIR).list("*.json")) if loc.name != OPTIONS}


def finished_catalog(out: Location, shard: str) -> dict | None:
    """The catalog of `shard` if it is finished, else None."""
    loc = out.child(CATALOG_DIR, catalog_name(shard))
    return json.loads(retrying(loc.read_text)) if retrying(loc.exists) else None


def read_catalogs(out: Location, shards: list[str]) -> list[dict]:
    """The catalogs of `shards`, read in parallel, in the order given."""
    def read(name: str) -> dict:
        return json.loads(retrying(out.child(CATALOG_DIR, catalog_name(name)).read_text))

    with ThreadPoolExecutor(CATALOG_READERS) as pool:
        return list(pool.map(read, shards))


def remove_unfinished(out: Location) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    folders = (out, out.child(CATALOG_DIR), out.child(PLANS_DIR))
    stale = [loc for folder in folders for loc in folder.list(f".*{TEMP_MARK}*")]
    for loc in stale:
        loc.delete()
    return len(stale)
