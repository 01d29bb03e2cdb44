"""The summary (`_summary.json`) and the failure table (`_failures.csv`) beside the shards.

Both describe the whole folder, however many runs it took, and are rewritten at the end of each run from
one streamed read of the sample table's small columns: their size follows the corpus's splits (and its
failures), not its history or its shard count. A failure counts while it is the latest word on its video:
once the video is planned again (`--retry-failed`) or has left the inputs, its old failure is gone.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.preprocess.plan import Ledger
from pipelines.preprocess.sources import Failure
from pipelines.shards.format import FAILURE_COLUMNS, FAILURES, FORMAT, SAMPLE_FILTER, SUMMARY, sample_table, shard_base
from pipelines.shards.id_set import IdSet, fingerprints
from pipelines.storage.location import Location

COUNTS = ("samples", "shards", "bytes", "frames", "captions", "failures", "removed")
SCANNED = ["id", "split", "shard", "valid", "captions"]
FAILED = ["id", "split", "shard", "source", "stage", "error"]


def summarize(out: Location, ledger: Ledger, removed: pa.Table, source_failures: list[Failure],
              options: dict) -> tuple[dict, list[Failure]]:
    """(summary, failure table) of the folder as it is now."""
    splits: dict[str, dict] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    shards: dict[str, set[str]] = defaultdict(set)
    gone = removed["id"].combine_chunks()
    removed_set = IdSet([gone])
    ds = sample_table(out)
    for batch in ds.to_batches(columns=SCANNED, filter=SAMPLE_FILTER) if ds is not None else ():
        samples = pa.Table.from_batches([batch])
        left = pa.array(removed_set.holds(fingerprints(samples["id"])))
        _add_counts(splits, shards, samples.filter(pc.invert(left)))
        for split, n in _per_split(samples.filter(left)).items():
            splits[split]["removed"] += n
    sizes = out.sizes("*.tar")
    for split, names in shards.items():
        splits[split]["shards"] = len(names)
        splits[split]["bytes"] = sum(sizes.get(name, 0) for name in names)
    failures = latest_failures(out, ledger, gone, source_failures)
    for f in failures:
        splits[f.split or "unknown"]["failures"] += 1
    summary = {"format": FORMAT, "options": options, "splits": dict(sorted(splits.items())),
               "samples": sum(s["samples"] for s in splits.values()), "failures": len(failures),
               "removed": removed.num_rows}
    return summary, failures


def _add_counts(splits: dict, shards: dict, samples: pa.Table) -> None:
    table = samples.group_by("split").aggregate(
        [("id", "count"), ("valid", "sum"), ("captions", "sum"), ("shard", "distinct")])
    for row in table.to_pylist():
        t = splits[row["split"]]
        t["samples"] += row["id_count"]
        t["frames"] += row["valid_sum"]
        t["captions"] += row["captions_sum"]
        shards[row["split"]].update(row["shard_distinct"])


def _per_split(samples: pa.Table) -> dict[str, int]:
    counts = pc.value_counts(samples["split"])
    return {c["values"]: c["counts"] for c in counts.to_pylist()}


def latest_failures(out: Location, ledger: Ledger, removed: pa.Array, source_failures: list[Failure]
                    ) -> list[Failure]:
    """The failure table: every failure that is still the latest word on its video, sorted."""
    ds = sample_table(out)
    rows = ds.to_table(columns=FAILED, filter=f"NOT ({SAMPLE_FILTER})").to_pylist() if ds is not None else []
    last_shard = ledger.last_shards([r["id"] for r in rows])
    gone = set(pc.filter(removed, pc.is_in(removed, value_set=pa.array(
        [r["id"] for r in rows] + [f.id for f in source_failures], pa.string()))).to_pylist())
    found = [f for f in source_failures if f.id not in gone]
    found += [Failure(r["source"], r["id"], r["split"], r["stage"], r["error"]) for r in rows
              if last_shard.get(r["id"]) == shard_base(r["shard"]) and r["id"] not in gone]
    return sorted(found, key=lambda f: (f.split, f.id, f.input, f.stage))


def write_report(out: Location, summary: dict, failures: list[Failure]) -> None:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(FAILURE_COLUMNS)
    writer.writerows([getattr(f, c) for c in FAILURE_COLUMNS] for f in failures)
    out.child(FAILURES).write_atomic(table.getvalue().encode("utf-8"))
    out.child(SUMMARY).write_atomic(json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8"))
