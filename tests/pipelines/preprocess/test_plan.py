"""Planning without Ray: the ledger as columns, new shards cut from the spooled inputs, tasks' references."""
import json

import numpy as np
import pyarrow.parquet as pq

from pipelines.preprocess import plan
from pipelines.preprocess.inputs import collect_inputs
from pipelines.preprocess.sources import read_manifest
from pipelines.storage.location import Location


def manifest(path, ids, split="train"):
    path.write_text("".join(json.dumps({"video": f"{i}.mp4", "id": i, "captions": [f"caption of {i}"],
                                        "split": split}) + "\n" for i in ids))
    return str(path)


def test_new_shards_are_sorted_by_id_and_each_task_reads_only_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "PLAN_SHARDS", 2)
    ids = [f"v{n:02d}" for n in np.random.default_rng(0).permutation(11)]
    inputs = collect_inputs(read_manifest(manifest(tmp_path / "m.jsonl", ids), batch_rows=4))
    out = Location.of(str(tmp_path / "out"))
    refs = plan.write_plans(out, inputs, plan.plan_new(inputs, np.arange(11), 3, {}))
    assert [(r.name, r.videos) for r in refs] == [(f"train-{n:06d}.tar", 3 if n < 3 else 2) for n in range(4)]
    files = sorted(p.name for p in (tmp_path / "out" / "_plans").iterdir())
    assert files == ["plan-000000.parquet", "plan-000001.parquet"]        # two shards a file
    assert pq.ParquetFile(tmp_path / "out" / "_plans" / files[0]).num_row_groups == 2   # a row group a shard
    loaded = [ref.load() for ref in refs]
    assert [v.id for p in loaded for v in p.videos] == sorted(ids)
    assert loaded[1].videos[0].captions == ("caption of v03",)


def test_the_ledger_knows_planned_ids_their_last_shard_and_what_left(tmp_path):
    out = Location.of(str(tmp_path / "out"))
    first = collect_inputs(read_manifest(manifest(tmp_path / "a.jsonl", ["a", "b", "c"])))
    plan.write_plans(out, first, plan.plan_new(first, np.arange(3), 2, {}))
    ledger = plan.Ledger.read(out)
    assert ledger.last_numbers() == {"train": 1} and len(ledger) == 3
    again = collect_inputs(read_manifest(manifest(tmp_path / "b.jsonl", ["c", "d", "a"])))
    found = ledger.ids.find(again.prints)
    assert (found >= 0).tolist() == [True, False, True]
    plan.write_plans(out, again, plan.plan_new(again, np.array([0]), 2, ledger.last_numbers()))  # c again
    ledger = plan.Ledger.read(out)
    assert ledger.last_shards(["c", "a", "zz"]) == {"c": "train-000002.tar", "a": "train-000000.tar"}
    removed = ledger.removed(out, ledger.ids.find(again.prints), None, plan.REMOVED_SCHEMA.empty_table())
    assert removed.to_pylist() == [{"id": "b", "split": "train"}]
