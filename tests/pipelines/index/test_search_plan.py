"""Search stays fast through every change of the index: a version that has passed the exact-search size without
an ANN index is never searched (readers stay on the version before it until the index is built), new rows are
found at once and folded into the ANN index as they come, and `info` says how each version is searched."""
import numpy as np
import pytest

from pipelines.index import IndexStore, refresh_ann
from pipelines.index import search as index_search
from pipelines.index.search import AnnSettings, IndexNotReady, VideoIndex, ann_index
from tests.pipelines.index.indexes import V1, commit, unit_vectors

N, DIM = 1600, 16


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    centres = unit_vectors(20, DIM, seed=4)
    emb = centres[rng.integers(0, 20, N)] + rng.normal(0, 0.05, (N, DIM)).astype(np.float32)
    return [f"v{i}" for i in range(N)], emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    monkeypatch.setattr(index_search, "EXACT_MAX", 1000)
    monkeypatch.setattr(index_search, "FOLD_ROWS", 150)


def test_readers_stay_on_the_last_exact_version_until_the_ann_index_is_built(tmp_path, vectors):
    ids, emb = vectors
    store = IndexStore(tmp_path)
    with store.writer(V1, "first") as w:
        commit(w, ids[:1000], emb[:1000], rows=250)
    exact_version = store.dataset().version
    with store.writer(V1, "grow") as w:
        commit(w, ids[1000:1200], emb[1000:1200], rows=100)      # the first commit passes the exact size
    assert store.serving() == exact_version
    index = store.open()
    assert (index.version, index.kind, len(index)) == (exact_version, "exact", 1000)
    with pytest.raises(IndexNotReady, match="no ANN index"):
        VideoIndex(store.dataset(), str(tmp_path))                # the latest: never loaded whole or scanned
    versions = {v["version"]: v["search"] for v in store.info(versions=50)["versions"]}
    assert versions[exact_version] == "exact" and versions[store.dataset().version] == "not ready"
    assert store.release_serving() is False                       # nothing to move readers to yet
    done = store.compact()                                        # what the embedding job's upkeep does
    assert done["ann"] == "built" and done["readers_moved_on"] is True and store.serving() is None
    index = store.open()
    assert index.kind == f"ANN ({index_search.DEFAULT_KIND})" and len(index) == 1200
    assert store.info()["search"].startswith(f"ANN ({index_search.DEFAULT_KIND}") and "1,200 rows indexed" in \
        store.info()["search"]


@pytest.mark.parametrize("kind", ["IVF_PQ", "IVF_HNSW_SQ"])
def test_new_rows_are_found_at_once_and_folded_into_the_ann_index_as_they_come(tmp_path, vectors, kind):
    ids, emb = vectors
    store = IndexStore(tmp_path)
    with store.writer(V1, "first") as w:
        commit(w, ids[:1200], emb[:1200], rows=300)
    assert store.refresh_search(kind=kind) == {"ann": "built", "readers_moved_on": True}   # pinned at 900 rows
    settings = AnnSettings.of(store.dataset())
    assert settings.kind == kind and settings.trained_rows == 1200 and settings.model == V1.to_json()
    with store.writer(V1, "grow") as w:
        commit(w, ids[1200:1300], emb[1200:1300], rows=100)      # 100 rows outside the index: under FOLD_ROWS
        index = store.open()
        assert index.plan.unindexed == 100 and ann_index(store.dataset())["segments"] == 1
        found = index.search(emb[1200:1300], k=1)
        assert np.mean([hits[0].video_id == ids[1200 + i] for i, hits in enumerate(found)]) >= 0.95
        commit(w, ids[1300:1400], emb[1300:1400], rows=100)      # 200 outside: folded in as a delta index
        assert store.open().plan.unindexed == 0 and ann_index(store.dataset())["segments"] == 2
    assert refresh_ann(store.dataset()) == "updated"              # the upkeep merges the deltas
    assert ann_index(store.dataset())["segments"] == 1 and AnnSettings.of(store.dataset()).kind == kind
    index = store.open()
    found = index.search(emb[1300:1400], k=1)
    assert np.mean([hits[0].video_id == ids[1300 + i] for i, hits in enumerate(found)]) >= 0.95
    with store.writer(V1, "more") as w:                           # over a fifth of the rows came after training
        commit(w, ids[1400:], emb[1400:], rows=100)
    assert refresh_ann(store.dataset()) == "built"
    assert AnnSettings.of(store.dataset()).trained_rows == N


def test_rows_far_beyond_the_index_are_skipped_rather_than_scanned(tmp_path, vectors, monkeypatch):
    ids, emb = vectors
    store = IndexStore(tmp_path)
    with store.writer(V1, "first") as w:
        commit(w, ids[:1200], emb[:1200], rows=300)
    store.refresh_search()
    monkeypatch.setattr(index_search, "FOLD_ROWS", 10_000)        # a writer that did not fold (an older one)
    monkeypatch.setattr(index_search, "UNINDEXED_MAX", 50)
    with store.writer(V1, "grow") as w:
        commit(w, ids[1200:1300], emb[1200:1300], rows=100)
    index = store.open()
    assert index.plan.unindexed == 100 and "skipped" in index.plan.describe()
    hits = index.search(emb[1200:1300], k=3)
    assert not {h.video_id for row in hits for h in row} & set(ids[1200:1300])
