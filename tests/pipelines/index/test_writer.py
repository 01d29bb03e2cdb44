"""The writer: fragments committed by a run, model versions published whole, deletions, failures."""
import datetime as dt

import pyarrow as pa

from pipelines.index import IndexStore, write_fragment
from tests.pipelines.index.indexes import EMB, IDS, V1, V2, V3, batch, build, commit, unit_vectors


def test_rerun_with_the_same_model_finds_everything_done_and_commits_nothing(tmp_path):
    store = build(tmp_path)
    version = store.dataset().version
    with store.writer(V1, "again") as w:
        assert sorted(i for b in w.done_ids() for i in b.to_pylist()) == IDS
        w.publish()
    assert store.dataset().version == version


def test_a_new_model_version_stays_invisible_until_published_then_replaces_every_row(tmp_path):
    store = build(tmp_path)
    with store.writer(V2, "reembed") as w:
        assert not list(w.done_ids())
        commit(w, IDS[:24], unit_vectors(24, seed=2))
        during = store.open()          # new rows are in the table, readers still see only the old version ...
        assert during.model == V1 and sorted(during.video_ids()) == IDS
        assert during.filter is None and during.version == store.serving()   # ... pinned, with nothing to filter
        commit(w, IDS[24:], unit_vectors(16, seed=3))
        w.publish()
    assert store.open().model == V1    # published, but readers wait for its search to be built (`refresh_ann`)
    assert store.release_serving() and store.serving() is None
    after = store.open()
    assert after.model == V2 and sorted(after.video_ids()) == IDS
    assert set(store.dataset().to_table(columns=["model_version"]).column(0).to_pylist()) == {"2"}
    assert during.version < after.version and sorted(store.open(during.version).video_ids()) == IDS
    for version in range(during.version, after.version + 1):   # every commit of the publish is a whole index
        pinned = store.open(version)
        assert sorted(pinned.video_ids()) == IDS, (version, pinned.model)


def test_an_interrupted_reembed_is_continued_or_dropped_when_yet_another_version_comes(tmp_path):
    store = build(tmp_path)
    with store.writer(V2, "killed") as w:
        commit(w, IDS[:16], unit_vectors(16, seed=2))     # then killed: never published
    with store.writer(V2, "continued") as w:
        assert sorted(i for b in w.done_ids() for i in b.to_pylist()) == IDS[:16]
    with store.writer(V3, "another") as w:                # V2's rows are dropped, V1 stays live
        assert not list(w.done_ids())
    assert store.dataset().count_rows() == 40 and store.open().model == V1


def test_removed_videos_leave_the_index(tmp_path):
    store = build(tmp_path)
    with store.writer(V1, "shrink") as w:
        assert w.remove(pa.array(["video003", "video010", "not-there"])) == 2
    index = store.open()
    assert len(index) == 38 and "video003" not in index.video_ids()


def test_failures_are_recorded_and_not_indexed(tmp_path):
    store = IndexStore(tmp_path)
    with store.writer(V1, "run") as w:
        out = write_fragment(batch(IDS[:3], EMB[:3], ["", "DecodeError: bad frame", ""]), w.uri, V1.__dict__)
        assert list(out["error"]) == ["", "DecodeError: bad frame", ""]
        w.commit([f for f in out["fragments"] if f])
        w.record_failures([{"video_id": IDS[1], "error": "DecodeError: bad frame", "source": "t.tar"}])
    assert sorted(store.open().video_ids()) == [IDS[0], IDS[2]]
    (failure,) = store.failures().to_pylist()
    assert (failure["video_id"], failure["run_id"], failure["model_version"]) == (IDS[1], "run", "1")
    assert failure["failures"] == 1 and failure["first_failed_at"] == failure["failed_at"]


def test_a_video_that_fails_every_night_keeps_one_row(tmp_path):
    store = IndexStore(tmp_path)
    for night in range(3):
        with store.writer(V1, f"night{night}") as w:
            w.record_failures([{"video_id": IDS[1], "error": f"DecodeError: night {night}", "source": "t.tar"},
                               {"video_id": IDS[night + 2], "error": "once", "source": "t.tar"}])
    rows = {r["video_id"]: r for r in store.failures().to_pylist()}
    assert len(rows) == 4 and rows[IDS[1]]["failures"] == 3 and rows[IDS[2]]["failures"] == 1
    again = rows[IDS[1]]
    assert (again["error"], again["run_id"]) == ("DecodeError: night 2", "night2")
    assert again["first_failed_at"] < again["failed_at"]


def test_a_failure_table_of_a_row_per_failure_is_folded_once(tmp_path):

    import lance

    store = IndexStore(tmp_path)
    day = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    old = pa.Table.from_pylist([{"video_id": IDS[1], "error": f"e{n}", "source": "t.tar", "run_id": f"r{n}",
                                 "model_version": "1", "failed_at": day + dt.timedelta(days=n)} for n in range(3)])
    lance.write_dataset(old, store.uri("failures.lance"))
    with store.writer(V1, "now") as w:
        w.record_failures([{"video_id": IDS[1], "error": "again", "source": "t.tar"}])
    (row,) = store.failures().to_pylist()
    assert (row["failures"], row["error"], row["first_failed_at"]) == (4, "again", day)
