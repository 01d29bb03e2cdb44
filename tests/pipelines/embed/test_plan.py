"""The embedding plan: the sample table less what the index holds, as Parquet row groups of a model batch each,
found by fingerprints of the ids."""
import numpy as np
import pyarrow as pa

from pipelines.embed.plan import FINGERPRINT, _among, fingerprints, plan_embedding, read_part
from pipelines.storage import Location


def planned(shards, folder, done=()):
    """The embedding plan of `shards` (less the ids in `done`) and its rows as a Ray Data batch would hold them."""
    plan = plan_embedding(str(shards), [pa.array(list(done), pa.string())], Location.of(folder), "test", 4)
    table = pa.concat_tables([t for t in read_part(pa.Table.from_pylist(plan.parts(100)))])
    return plan, {k: np.asarray(table[k].to_pylist(), dtype=object) for k in table.column_names}


def test_the_plan_is_the_sample_table_less_what_is_done(synthetic_shards, tmp_path):
    plan, rows = planned(synthetic_shards, tmp_path / "all")
    assert plan.videos == plan.todo == 16 and sorted(rows["video_id"]) == [f"syn{i:04d}" for i in range(16)]
    assert all(t.startswith(str(synthetic_shards) + "/") and t.endswith(".tar") for t in rows["tar"])
    plan, rows = planned(synthetic_shards, tmp_path / "some", done=[f"syn{i:04d}" for i in range(10)])
    assert plan.videos == 16 and plan.todo == 6 and sorted(rows["video_id"]) == [f"syn{i:04d}" for i in range(10, 16)]
    assert plan.groups == [2] and plan.parts(1) == [{"uri": plan.file(0).uri, "first": 0, "count": 2}]
    assert [len(t) for t in read_part(pa.Table.from_pylist(plan.parts(100)))] == [4, 2]   # a model batch each
    plan.remove()
    assert not list((tmp_path / "some").rglob("*.parquet"))


def test_fingerprints_tell_ids_apart_and_agree_across_batches():
    ids = [f"v{i:09d}" for i in range(50_000)] + ["", "a", "é", "a" * 300, "x/y.mp4", "x/y.mp3"]
    prints = fingerprints(pa.array(ids))
    assert len(np.unique(prints)) == len(ids)
    again = fingerprints(pa.chunked_array([ids[:7], ids[7:]]).combine_chunks().slice(5))   # offsets into a buffer
    assert (again == prints[5:]).all()


def rows_of(shards, folder):
    return planned(shards, folder)[1]


def test_a_run_of_equal_high_halves_is_searched_through():
    known = np.zeros(4, FINGERPRINT)
    known["a"], known["b"] = [5, 5, 5, 7], [1, 2, 3, 1]
    queries = np.zeros(4, FINGERPRINT)
    queries["a"], queries["b"] = [5, 5, 7, 5], [3, 9, 1, 1]
    assert _among(queries, (known["a"], known["b"])).tolist() == [True, False, True, True]
