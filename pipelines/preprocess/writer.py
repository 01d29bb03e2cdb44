"""Write one finished shard: the tar under a hidden temporary name, renamed when complete, then its index.

The index (`_index/<shard>.json`) is written last, so it is the mark of a finished shard: a job killed
between the two renames leaves a complete tar without an index, which the next run simply writes again
(identical bytes). Unfinished temporary files are hidden and removed by the next run.
"""
from __future__ import annotations

import json
import tarfile

from pipelines.preprocess.layout import FORMAT, INDEX_DIR, index_name
from pipelines.preprocess.plan import ShardPlan
from pipelines.storage import TEMP_MARK, Location

END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


class ResumeError(ValueError):
    """The output folder holds work that does not match this job (other inputs or other options)."""


def write_shard(out: Location, plan: ShardPlan, results: list[dict]) -> dict:
    """Write `plan`'s shard from its decoder results (one per video, any order); returns its index."""
    results = sorted(results, key=lambda r: r["pos"])
    samples, failures, fragments, offset = [], [], [], 0
    for r in results:
        if r["error"]:
            failures.append({"input": r["uri"], "id": r["id"], "split": r["split"],
                             "stage": r["stage"], "error": r["error"]})
            continue
        members = {name: [offset + o, size] for name, (o, size) in json.loads(r["members"]).items()}
        samples.append({"key": r["key"], "id": r["id"], "captions": r["captions"], "valid": r["valid"],
                        "span": [offset, offset + len(r["fragment"])], "members": members})
        fragments.append(r["fragment"])
        offset += len(r["fragment"])
    size = 0
    if samples:  # a shard whose videos all failed leaves only its index
        size = offset + len(END_OF_ARCHIVE)
        size += -size % tarfile.RECORDSIZE
        shard = out.child(plan.name)
        tmp = shard.temp_sibling()
        with tmp.fs.open_output_stream(tmp.path) as f:
            for fragment in fragments:
                f.write(fragment)
            f.write(b"\0" * (size - offset))
        tmp.fs.move(tmp.path, shard.path)
    index = {"format": FORMAT, "shard": plan.name, "split": plan.split, "bytes": size,
             "frames": sum(s["valid"] for s in samples), "planned": plan.ids,
             "samples": samples, "failures": failures}
    out.child(INDEX_DIR, index_name(plan.name)).write_atomic(json.dumps(index, ensure_ascii=False).encode())
    return index


def finished_index(out: Location, plan: ShardPlan) -> dict | None:
    """The index of `plan`'s shard if an earlier run finished it, else None."""
    loc = out.child(INDEX_DIR, index_name(plan.name))
    if not loc.exists():
        return None
    index = json.loads(loc.read_text())
    if index["samples"] and not out.child(plan.name).exists():
        return None
    if index.get("planned") != plan.ids:
        raise ResumeError(f"{out.uri}/{plan.name} was made from other videos than these inputs give now "
                          "(inputs changed since the first run); write to a new output folder")
    return index


def remove_unfinished(out: Location) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    stale = [loc for folder in (out, out.child(INDEX_DIR)) for loc in folder.list(f".*{TEMP_MARK}*")]
    for loc in stale:
        loc.delete()
    return len(stale)
