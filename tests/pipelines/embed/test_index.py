"""The index on Lance by itself: fragments committed by a run, model versions, deletions, the writers' lease,
pinned versions, ANN search, operators' commands. Local folders and a real S3 server (SeaweedFS)."""
import datetime as dt
import multiprocessing

import numpy as np
import pyarrow as pa
import pytest

from pipelines.index import (IndexBusy, IndexNotFound, IndexStore, LegacyIndex, ModelRef, VideoIndexError,
                             refresh_ann, write_fragment)
from pipelines.index import search as index_search

V1 = ModelRef("tiny", "1", "models:/tiny/1")
V2 = ModelRef("tiny", "2", "models:/tiny/2")
V3 = ModelRef("tiny", "3", "models:/tiny/3")


def unit_vectors(n, dim=16, seed=0):
    e = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


IDS = [f"video{i:03d}" for i in range(40)]
EMB = unit_vectors(40)


def batch(ids, emb, errors=None):
    n = len(ids)
    return {"video_id": np.asarray(ids, object), "embedding": emb,
            "error": np.asarray(errors or [""] * n, object), "caption": np.asarray([f"about {i}" for i in ids], object),
            "thumb_shard": np.asarray(["s3://b/train-000000.tar"] * n, object),
            "thumb_offset": np.arange(n) * 100, "thumb_size": np.full(n, 50)}


def commit(writer, ids, emb, rows=8):
    """What the job does: writer tasks write fragments of `rows` rows, the writer commits each."""
    for start in range(0, len(ids), rows):
        out = write_fragment(batch(ids[start:start + rows], emb[start:start + rows]), writer.uri, writer.model.__dict__)
        writer.commit([f for f in out["fragments"] if f])


def build(location, model=V1, ids=IDS, emb=EMB, run="run"):
    with IndexStore(location).writer(model, run) as w:
        commit(w, ids, emb)
        w.publish()
    return IndexStore(location)


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFound, match=str(tmp_path)):
        IndexStore(tmp_path).open()


def test_search_is_exact_and_shows_caption_and_thumbnail(tmp_path):
    index = build(tmp_path).open()
    assert len(index) == 40 and index.model == V1 and index.kind == "exact"
    queries = unit_vectors(3, seed=1)
    for q, hits in zip(queries, index.search(queries, k=5)):
        expected = np.argsort(-(EMB @ q))[:5]
        assert [h.video_id for h in hits] == [IDS[i] for i in expected]
        assert np.allclose([h.score for h in hits], (EMB @ q)[expected], atol=1e-6)
        assert hits[0].caption == f"about {hits[0].video_id}" and hits[0].thumbnail[0].endswith(".tar")
    row = IndexStore(tmp_path).dataset().to_table(filter="video_id = 'video007'").to_pylist()[0]
    assert (row["model_name"], row["model_version"], row["thumb_offset"]) == ("tiny", "1", 700)
    assert row["embedded_at"] is not None


def test_rerun_with_the_same_model_finds_everything_done_and_commits_nothing(tmp_path):
    store = build(tmp_path)
    version = store.dataset().version
    with store.writer(V1, "again") as w:
        assert sorted(w.done_ids().to_pylist()) == IDS
        w.publish()
    assert store.dataset().version == version


def test_a_new_model_version_stays_invisible_until_published_then_replaces_every_row(tmp_path):
    store = build(tmp_path)
    with store.writer(V2, "reembed") as w:
        assert len(w.done_ids()) == 0
        commit(w, IDS[:24], unit_vectors(24, seed=2))
        during = store.open()          # new rows are in the table, readers still see only the old version
        assert during.model == V1 and sorted(during.video_ids()) == IDS
        commit(w, IDS[24:], unit_vectors(16, seed=3))
        w.publish()
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
        assert sorted(w.done_ids().to_pylist()) == IDS[:16]
    with store.writer(V3, "another") as w:                # V2's rows are dropped, V1 stays live
        assert len(w.done_ids()) == 0
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


def test_a_second_writer_is_refused_while_the_first_holds_the_lease(tmp_path):
    store = build(tmp_path)
    with store.writer(V1, "first"):
        with pytest.raises(IndexBusy, match="embedding run first .* is writing this index"):
            with store.writer(V1, "second"):
                pass
    with store.writer(V1, "second"):     # released: the next one goes on
        pass


def _hold_lease_and_die(location):
    from pipelines.index.lease import WriterLease

    WriterLease(IndexStore(location), "dead").acquire()   # the process ends without releasing


def test_the_lease_of_a_dead_process_on_this_machine_is_taken_at_once(tmp_path):
    store = build(tmp_path)
    process = multiprocessing.get_context("spawn").Process(target=_hold_lease_and_die, args=(str(tmp_path),))
    process.start()
    process.join()
    with store.writer(V1, "next"):
        pass


def test_an_expired_lease_is_taken(tmp_path):
    from pipelines.index.lease import WriterLease

    store = build(tmp_path)
    stale = WriterLease(store, "stale", ttl=dt.timedelta(milliseconds=1))
    stale.acquire()
    with store.writer(V1, "next"):
        with pytest.raises(IndexBusy, match="ran out"):
            stale.renew(every=0)


def test_pinned_versions_unknown_versions_and_cleanup(tmp_path):
    store = build(tmp_path, ids=IDS[:20], emb=EMB[:20])
    pinned = store.dataset().version
    with store.writer(V1, "more") as w:
        commit(w, IDS[20:], EMB[20:])
    assert len(store.open(pinned)) == 20 and len(store.open()) == 40
    with pytest.raises(VideoIndexError, match="no version 999"):
        store.open(999)
    removed = store.cleanup(older_than=dt.timedelta(0))
    assert removed["videos.lance"]["versions"] > 0
    assert len(store.open()) == 40         # the latest version always stays
    info = store.info()
    assert (info["rows"], info["model"]["version"], info["search"]) == (40, "1", "exact")
    assert store.compact()["fragments_added"] >= 1 and len(store.open()) == 40


def test_an_old_format_index_or_a_foreign_folder_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "CURRENT").write_text("manifests/00000001-x.json\n")
    with pytest.raises(LegacyIndex, match="format before Lance; re-embed"):
        IndexStore(tmp_path / "old").open()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(VideoIndexError, match="holds other things \\(holiday.jpg\\)"):
        with IndexStore(tmp_path / "photos").writer(V1, "run"):
            pass


def test_above_the_threshold_an_ann_index_is_built_kept_up_and_rebuilt_for_a_new_model(tmp_path, monkeypatch):
    n, dim = 3000, 16
    rng = np.random.default_rng(0)
    centres = unit_vectors(30, dim, seed=4)
    emb = centres[rng.integers(0, 30, n)] + rng.normal(0, 0.05, (n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(n)]
    store = IndexStore(tmp_path)
    with store.writer(V1, "run") as w:
        commit(w, ids[:2500], emb[:2500], rows=1000)
    assert refresh_ann(store.dataset(), exact_max=1000) == "built"
    with store.writer(V1, "grow") as w:
        commit(w, ids[2500:], emb[2500:], rows=1000)
    assert refresh_ann(store.dataset(), exact_max=1000) == "updated"
    assert refresh_ann(store.dataset(), exact_max=1000) == "current"
    monkeypatch.setattr(index_search, "EXACT_MAX", 1000)
    index = store.open()
    assert index.kind == "ANN (IVF_PQ)" and len(index) == n
    queries = emb[:20]
    exact = np.argsort(-(emb @ queries.T), axis=0)[:10].T
    found = index.search(queries, k=10)
    recall = np.mean([len({h.video_id for h in hits} & {ids[i] for i in row}) / 10 for hits, row in zip(found, exact)])
    assert recall >= 0.9
    assert all(hits[0].video_id == ids[i] for i, hits in enumerate(found))   # each vector finds itself first
    with store.writer(V2, "reembed") as w:
        commit(w, ids, emb[::-1].copy(), rows=1000)
        w.publish()
    assert refresh_ann(store.dataset(), exact_max=1000) == "built"    # trained on another model's vectors


def _contend(uri, name, barrier, results):
    try:
        barrier.wait()
        with IndexStore(uri).writer(V1, name) as w:
            commit(w, IDS, EMB)
            results.put((name, "wrote"))
    except IndexBusy as e:
        results.put((name, f"busy: {e}"))


def test_two_writers_on_an_s3_index_at_once_one_writes_the_other_is_told(s3_server):
    """Two processes race for the lease of one index on a real S3 server."""
    uri = f"{s3_server.prefix('race')}/index"
    build(uri, ids=IDS[:4], emb=EMB[:4])
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_contend, args=(uri, name, barrier, results)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = dict(results.get(timeout=5) for _ in procs)
    assert sorted(o.split(":")[0] for o in outcomes.values()) == ["busy", "wrote"], outcomes
    ids = IndexStore(uri).open().video_ids()
    assert len(ids) == 4 + 40 and set(ids) == set(IDS)    # the winner's commits all whole, the first ones kept


def test_an_object_store_index_commits_searches_and_reads_pinned_versions(s3_server):
    uri = f"{s3_server.prefix('index')}/index"
    store = build(uri, ids=IDS[:16], emb=EMB[:16])
    first = store.dataset().version
    with store.writer(V1, "more") as w:
        commit(w, IDS[16:], EMB[16:])
    index = store.open()
    assert sorted(index.video_ids()) == IDS
    assert [h.video_id for h in index.search(EMB[:2], k=1)[1]] == [IDS[1]]
    assert len(store.open(first)) == 16
