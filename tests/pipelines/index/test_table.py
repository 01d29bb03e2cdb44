"""IndexStore: opening, versions, cleanup, refusing what is not an index; on a real S3 server too."""
import datetime as dt

import pytest

from pipelines.index import IndexNotFound, IndexStore, LegacyIndex, VideoIndexError
from tests.pipelines.index.indexes import EMB, IDS, V1, build, commit


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFound, match=str(tmp_path)):
        IndexStore(tmp_path).open()


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
