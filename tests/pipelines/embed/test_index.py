"""The index format on its own: committed parts, adoption after a kill, atomic swaps, exact search."""
import json
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.index import POINTER, IndexBusy, IndexNotFound, IndexStore, ModelRef

V1 = ModelRef("tiny", "1", "models:/tiny/1")
V2 = ModelRef("tiny", "2", "models:/tiny/2")


def unit_vectors(n, dim=16, seed=0):
    e = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


IDS = [f"video{i:03d}" for i in range(40)]
EMB = unit_vectors(40)


def build(location, model=V1, ids=IDS, emb=EMB, part_rows=8, **kw):
    with IndexStore(location).writer(model, part_rows=part_rows, **kw) as w:
        w.add(ids, emb)
        return w.publish()


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFound, match=str(tmp_path)):
        IndexStore(tmp_path).open()


def test_search_is_exact_and_parts_hold_the_documented_columns(tmp_path):
    manifest = build(tmp_path)
    assert manifest.count == 40 and len(manifest.parts) == 5 and manifest.model == V1
    index = IndexStore(tmp_path).open()
    queries = unit_vectors(3, seed=1)
    for q, hits in zip(queries, index.search(queries, k=5)):
        expected = np.argsort(-(EMB @ q))[:5]
        assert [h.video_id for h in hits] == [IDS[i] for i in expected]
        assert np.allclose([h.score for h in hits], (EMB @ q)[expected], atol=1e-6)
    table = pq.read_table(tmp_path / manifest.parts[0].parquet)
    assert table.column_names == ["video_id", "embedding", "model_name", "model_version", "model_uri", "embedded_at"]
    assert set(table.column("model_version").to_pylist()) == {"1"}
    matrix = np.load(tmp_path / manifest.parts[0].matrix, mmap_mode="r")
    assert np.array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), matrix)


def test_rerun_with_the_same_model_adds_nothing_and_keeps_the_generation(tmp_path):
    first = build(tmp_path)
    with IndexStore(tmp_path).writer(V1) as w:
        assert w.done_ids == set(IDS)
        assert w.add(IDS, EMB) == 0
        assert w.publish() == first


def test_new_videos_are_added_incrementally(tmp_path):
    build(tmp_path, ids=IDS[:30], emb=EMB[:30])
    with IndexStore(tmp_path).writer(V1, part_rows=8) as w:
        assert w.add(IDS, EMB) == 10
        manifest = w.publish()
    assert manifest.generation == 2 and manifest.count == 40
    assert sorted(IndexStore(tmp_path).open().video_ids()) == IDS


def test_a_new_model_version_replaces_everything_at_once(tmp_path):
    build(tmp_path)
    other = unit_vectors(40, seed=7)
    with IndexStore(tmp_path).writer(V2, part_rows=8) as w:
        assert w.done_ids == set()
        w.add(IDS[:20], other[:20])
        assert IndexStore(tmp_path).open().model == V1     # nothing visible before publish
        w.add(IDS[20:], other[20:])
        manifest = w.publish()
    index = IndexStore(tmp_path).open()
    assert index.model == V2 and len(index) == 40
    assert index.search(other[5], k=1)[0][0].video_id == IDS[5]


def test_a_killed_run_leaves_committed_parts_that_the_next_run_adopts(tmp_path):
    with IndexStore(tmp_path).writer(V1, part_rows=8) as w:
        w.add(IDS[:21], EMB[:21])          # 2 parts committed, 5 rows still buffered: the "kill" loses those
    assert IndexStore(tmp_path).manifest() is None
    with IndexStore(tmp_path).writer(V1, part_rows=8) as w:
        assert w.adopted_count == 16 and w.done_ids == set(IDS[:16])
        assert w.add(IDS, EMB) == 24
        w.publish()
    ids = IndexStore(tmp_path).open().video_ids()
    assert sorted(ids) == IDS and len(ids) == len(set(ids))


def test_merging_many_parts_keeps_every_row_once_and_survives_a_rerun(tmp_path):
    manifest = build(tmp_path, part_rows=3, max_parts=4)
    assert len(manifest.parts) == 1 and manifest.count == 40
    files = sorted(p.name for p in (tmp_path / "parts" / V1.key).iterdir())
    assert len(files) == 2                  # the merged part's .npy and .parquet; the sources are gone
    with IndexStore(tmp_path).writer(V1) as w:
        assert w.adopted_count == 0 and w.add(IDS, EMB) == 0


def test_stale_sources_of_a_published_merge_are_not_adopted(tmp_path):
    """Killed between publishing a merge and deleting its sources: the sources must not come back."""
    with IndexStore(tmp_path).writer(V1, part_rows=8, max_parts=2) as w:
        w.add(IDS, EMB)
        w._delete_part = lambda part: None  # simulate the kill before the sources are deleted
        w.publish()
    with IndexStore(tmp_path).writer(V1) as w:
        assert w.adopted_count == 0
        w.publish()
    ids = IndexStore(tmp_path).open().video_ids()
    assert sorted(ids) == IDS and len(ids) == len(set(ids))


def test_one_writer_at_a_time(tmp_path):
    with IndexStore(tmp_path).writer(V1):
        with pytest.raises(IndexBusy, match=str(tmp_path)):
            with IndexStore(tmp_path).writer(V1):
                pass


def test_failures_are_recorded_with_their_reason(tmp_path):
    with IndexStore(tmp_path).writer(V1) as w:
        w.add(IDS[:3], EMB[:3])
        w.fail("broken", "frame 003.jpg: not a JPEG", source="train-000000.tar")
        w.publish()
    failures = IndexStore(tmp_path).failures().to_pylist()
    assert [(f["video_id"], f["error"], f["source"]) for f in failures] == [
        ("broken", "frame 003.jpg: not a JPEG", "train-000000.tar")]


def test_readers_see_one_complete_generation_while_writers_swap(tmp_path):
    build(tmp_path)
    seen, problems, stop = set(), [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                index = IndexStore(tmp_path).open()
                ids = index.video_ids()
                if sorted(ids) != IDS:
                    problems.append(f"generation {index.manifest.generation}: {len(ids)} ids")
                seen.add(index.model.version)
                index.search(EMB[0], k=3)
            except Exception as e:  # a missing file would mean a torn read
                problems.append(repr(e))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(6):
            build(tmp_path, model=(V2, V1)[round_ % 2], emb=unit_vectors(40, seed=round_), part_rows=8)
    finally:
        stop.set()
        reader.join()
    assert not problems, problems[:3]
    assert seen == {"1", "2"}
    pointer = (tmp_path / POINTER).read_text().strip()
    assert json.loads((tmp_path / pointer).read_text())["count"] == 40


def test_a_file_uri_is_the_same_index_and_the_same_lock_as_its_path(tmp_path):
    uri = tmp_path.as_uri()
    assert build(uri).count == 40
    index = IndexStore(tmp_path).open()
    assert sorted(index.video_ids()) == IDS
    assert index.search(EMB[7], k=1)[0][0].video_id == IDS[7]
    with IndexStore(uri).writer(V1):
        with pytest.raises(IndexBusy, match=str(tmp_path)):
            with IndexStore(tmp_path).writer(V1):
                pass


def test_an_object_store_index_commits_adopts_and_searches(s3_server):
    """A real S3 server: the index's pyarrow-filesystem code, with no mmap and no local lock."""
    uri = f"{s3_server.prefix('index')}/index"
    with IndexStore(uri).writer(V1, part_rows=8) as w:
        w.add(IDS[:21], EMB[:21])          # killed after 2 committed parts
    with IndexStore(uri).writer(V1, part_rows=8) as w:
        assert w.adopted_count == 16 and w.add(IDS, EMB) == 24
        w.publish()
    index = IndexStore(uri).open()
    assert sorted(index.video_ids()) == IDS
    assert [h.video_id for h in index.search(EMB[:2], k=1)[1]] == [IDS[1]]
