"""The summary (`_summary.json`) and the failure table (`_failures.csv`) beside the shards.

Both describe the whole folder, however many runs it took, and are rewritten at the end of each run. The
summary also keeps a few numbers per finished shard (`shards`), so a re-run over thousands of shards reads
only the catalogs of shards it has not summarised yet. A failure counts while it is the latest word on its
video: once the video is planned again (`--retry-failed`) or has left the inputs, its old failure is gone.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

import pyarrow as pa

from pipelines.preprocess.layout import FAILURE_COLUMNS, FAILURES, FORMAT, SUMMARY
from pipelines.preprocess.plan import last_shards
from pipelines.preprocess.sources import Failure
from pipelines.storage import Location, retrying

COUNTS = ("samples", "shards", "bytes", "frames", "captions", "failures", "removed")


def shard_stats(index: dict) -> dict:
    """The numbers of one shard's catalog that the summary needs."""
    return {"split": index["split"], "samples": len(index["samples"]), "bytes": index["bytes"],
            "frames": index["frames"], "captions": sum(s["captions"] for s in index["samples"]),
            "failures": index["failures"]}


def known_stats(out: Location) -> dict[str, dict]:
    """Per-shard numbers from the last summary written into `out` ({} when there is none)."""
    loc = out.child(SUMMARY)
    if not retrying(loc.exists):
        return {}
    return json.loads(retrying(loc.read_text)).get("shards", {})


def latest_failures(stats: dict[str, dict], ledger: pa.Table, removed: set[str],
                    source_failures: list[Failure]) -> list[Failure]:
    """The failure table: every failure that is still the latest word on its video, sorted."""
    last_shard = last_shards(ledger, [f["id"] for s in stats.values() for f in s["failures"]])
    found = [f for f in source_failures if f.id not in removed]
    for name, s in stats.items():
        found += [Failure(**f) for f in s["failures"] if last_shard.get(f["id"]) == name and f["id"] not in removed]
    return sorted(found, key=lambda f: (f.split, f.id, f.input, f.stage))


def build_summary(stats: dict[str, dict], failures: list[Failure], removed: pa.Table, ledger: pa.Table,
                  options: dict) -> dict:
    splits: dict[str, dict] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for s in stats.values():
        t = splits[s["split"]]
        t["shards"] += bool(s["samples"])
        for key in ("samples", "bytes", "frames", "captions"):
            t[key] += s[key]
    for f in failures:
        splits[f.split or "unknown"]["failures"] += 1
    last_shard = last_shards(ledger, removed["id"].to_pylist())
    failed = {(name, f["id"]) for name, s in stats.items() for f in s["failures"]}
    for vid, split in zip(removed["id"].to_pylist(), removed["split"].to_pylist()):
        shard = last_shard.get(vid)
        if shard in stats and (shard, vid) not in failed:   # a sample that readers now skip
            splits[split]["removed"] += 1
            splits[split]["samples"] -= 1
    return {"format": FORMAT, "options": options, "splits": dict(sorted(splits.items())),
            "samples": sum(s["samples"] for s in splits.values()), "failures": len(failures),
            "removed": removed.num_rows, "shards": dict(sorted(stats.items()))}


def write_report(out: Location, summary: dict, failures: list[Failure]) -> None:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(FAILURE_COLUMNS)
    writer.writerows([getattr(f, c) for c in FAILURE_COLUMNS] for f in failures)
    out.child(FAILURES).write_atomic(table.getvalue().encode("utf-8"))
    out.child(SUMMARY).write_atomic(json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8"))
