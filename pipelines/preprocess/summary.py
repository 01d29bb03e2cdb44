"""The summary (`_summary.json`) and the failure table (`_failures.csv`) beside the shards.

Both are rebuilt from every shard's index plus the inputs' own failures at the end of each run, so they
always describe the whole folder, however many runs it took.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

from pipelines.preprocess.layout import FAILURE_COLUMNS, FAILURES, FORMAT, SUMMARY
from pipelines.preprocess.sources import Failure
from pipelines.storage import Location


def build_summary(indexes: list[dict], failures: list[Failure], options: dict) -> dict:
    splits: dict[str, dict] = defaultdict(lambda: dict.fromkeys(
        ("samples", "shards", "bytes", "frames", "captions", "failures"), 0))
    for index in indexes:
        s = splits[index["split"]]
        s["shards"] += bool(index["samples"])
        s["samples"] += len(index["samples"])
        s["bytes"] += index["bytes"]
        s["frames"] += index["frames"]
        s["captions"] += sum(x["captions"] for x in index["samples"])
    for f in failures:
        splits[f.split or "unknown"]["failures"] += 1
    return {"format": FORMAT, "options": options, "splits": dict(sorted(splits.items())),
            "samples": sum(s["samples"] for s in splits.values()), "failures": len(failures)}


def all_failures(indexes: list[dict], source_failures: list[Failure]) -> list[Failure]:
    found = list(source_failures) + [Failure(**f) for index in indexes for f in index["failures"]]
    return sorted(found, key=lambda f: (f.split, f.id, f.input, f.stage))


def write_report(out: Location, summary: dict, failures: list[Failure]) -> None:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(FAILURE_COLUMNS)
    writer.writerows([getattr(f, c) for c in FAILURE_COLUMNS] for f in failures)
    out.child(FAILURES).write_atomic(table.getvalue().encode("utf-8"))
    out.child(SUMMARY).write_atomic(json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8"))
