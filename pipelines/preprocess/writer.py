"""Write one shard as its videos are decoded, then its rows of the sample table, which mark it finished.

Samples are appended to a spool file as they come (memory holds one sample at a time): on a local disk the
spool is a hidden temporary name beside the shard, renamed when complete; on an object store it is a local
temporary file uploaded once under the shard's final name (object stores have no rename). The shard's rows
(one per planned video: its sample's byte span, or why it gave none) are written last, as a data file of the
sample table that the job commits with other shards' (`commit_samples`): a run killed before that commit
leaves the shard unfinished, and the next run writes it again from the same plan (identical bytes, the
same name). Unfinished temporary files on a local disk are hidden and removed by the next run.
"""
from __future__ import annotations

import json
import os
import tarfile
import tempfile

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.preprocess.plan import ShardPlan
from pipelines.shards.format import (
    CATALOG_DIR,
    PLANS_DIR,
    SAMPLE_SCHEMA,
    commit_samples,
    frame_member,
    sample_table,
    shard_base,
    write_sample_rows,
)
from pipelines.storage.location import TEMP_MARK, Location, spool_dir
from pipelines.storage.uploads import abort_unfinished_uploads

END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


class ShardWriter:
    """Collects one shard's decoder results (`make_sample` rows, in plan order) and commits the shard."""

    def __init__(self, out: Location, plan: ShardPlan):
        self.out, self.plan, self.shard = out, plan, out.child(plan.name)
        if self.shard.is_local:
            self.spool_path = self.shard.temp_sibling().path
        else:
            handle, self.spool_path = tempfile.mkstemp(suffix=".tar", dir=spool_dir(), prefix=f"{os.getpid()}-")
            os.close(handle)
        self.spool = open(self.spool_path, "wb")
        self.rows: list[dict] = []      # one per sample (or failed video) of the shard, in plan order
        self.samples = 0
        self.seeked = 0     # samples whose frames were found by seeking (the rest decoded sequentially)
        self.offset = 0

    def add(self, r: dict) -> None:
        """One video's result: a row per sample (a whole video's, or each window's), or one row saying why it
        gave none."""
        row = {"id": r["id"], "split": r["split"], "shard": self.plan.name, "key": r.get("key", ""),
               "source": r["uri"], "start": 0, "end": 0, "valid": 0, "captions": 0, "thumb_offset": 0,
               "thumb_size": 0, "stage": r["stage"], "error": r["error"], "window_start": None, "window_end": None}
        if r["error"] or not r["samples"]:
            self.rows.append(row)
            return
        for sample in r["samples"]:
            thumb, size = json.loads(sample["members"])[frame_member(0)]
            self.rows.append({**row, "key": sample["key"], "start": self.offset,
                              "end": self.offset + len(sample["fragment"]), "valid": sample["valid"],
                              "captions": r["captions"], "thumb_offset": self.offset + thumb, "thumb_size": size,
                              "window_start": sample["window_start"], "window_end": sample["window_end"]})
            self.spool.write(sample["fragment"])
            self.offset += len(sample["fragment"])
            self.samples += 1
            self.seeked += r["method"] == "seek"

    def commit(self) -> dict:
        """Put the shard in place (if any video gave a sample), then its rows' data file; returns its counts and
        the fragments to commit."""
        try:
            if self.samples:  # a shard whose videos all failed leaves only its rows
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
        fragments = write_sample_rows(self.out, pa.Table.from_pylist(self.rows, schema=SAMPLE_SCHEMA))
        return {"samples": self.samples, "failures": len(self.rows) - self.samples, "seeked": self.seeked,
                "fragments": fragments}

    def discard(self) -> None:
        self.spool.close()
        if os.path.exists(self.spool_path):
            os.remove(self.spool_path)


def write_shard(out: Location, plan: ShardPlan, results: list[dict]) -> dict:
    """Write `plan`'s shard from its decoder results (one per video, any order) and commit its rows at once;
    returns its counts."""
    writer = ShardWriter(out, plan)
    for r in sorted(results, key=lambda r: r["pos"]):
        writer.add(r)
    done = writer.commit()
    commit_samples(out, done["fragments"])
    return done


def finished_shards(out: Location) -> set[str]:
    """Names of the shards whose rows are in the sample table, as planned (a compacted shard's rows name its
    new generation); one column read, a name per shard kept."""
    ds = sample_table(out)
    names: set[str] = set()
    if ds is not None:
        for batch in ds.to_batches(columns=["shard"]):
            names.update(shard_base(name) for name in pc.unique(batch.column(0)).to_pylist())
    return names


def remove_unfinished(out: Location) -> int:
    """Delete the temporary files and abort the multipart uploads a killed run left behind (call it holding
    the folder's lease, before writing); returns how many."""
    folders = (out, out.child(CATALOG_DIR), out.child(PLANS_DIR))
    stale = [loc for folder in folders for loc in folder.list(f".*{TEMP_MARK}*")]
    for loc in stale:
        loc.delete()
    return len(stale) + abort_unfinished_uploads(out)
