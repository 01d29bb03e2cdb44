"""The embedding plan: the sample table less what the index holds, as Parquet row groups of a model batch each,
found by fingerprints of the ids."""
import numpy as np
import pyarrow as pa

from pipelines.embed.plan import plan_embedding, read_part
from pipelines.storage.location import Location


def planned(shards, folder, done=()):
    """The embedding plan of `shards` (less the ids in `done`) and its rows as a Ray Data batch would hold them."""
    plan = plan_embedding([str(shards)], [pa.array(list(done), pa.string())], Location.of(folder), "test", 4)
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


def rows_of(shards, folder):
    return planned(shards, folder)[1]
