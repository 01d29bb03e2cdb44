"""A search replica's state without HTTP: queries checked, answered from one snapshot, new index versions
followed (with their new model), an index that is not there answered with Unavailable until it is."""
import shutil

import pytest

from pipelines.embed import EmbedOptions, embed_corpus
from pipelines.index.search import Hit
from pipelines.serve import MAX_K, MAX_QUERY_CHARS, BadQuery, SearchState, ServeOptions, Unavailable, parse_query
from pipelines.serve.state import _hit_json


@pytest.fixture
def served_index(trained_index, tmp_path):
    index, _, uri = trained_index
    shutil.copytree(index, tmp_path / "index")
    return tmp_path / "index", uri


@pytest.fixture
def state(served_index):
    index, uri = served_index
    state = SearchState(ServeOptions(index=str(index), tracking_uri=uri, refresh_s=3600))
    yield state
    state.close()


@pytest.mark.parametrize("q, k, says", [
    ("", None, "q is empty"), ("   ", "3", "q is empty"), (None, None, "q is empty"),
    ("x" * (MAX_QUERY_CHARS + 1), None, "characters long"),
    ("a dog", "ten", "whole number"), ("a dog", "0", f"from 1 to {MAX_K}"), ("a dog", str(MAX_K + 1), "from 1 to"),
])
def test_bad_queries_say_what_is_wrong(q, k, says):
    with pytest.raises(BadQuery, match=says):
        parse_query(q, k)


def test_defaults_and_trimming():
    assert parse_query("  a red square ", None) == ("a red square", 10)
    assert parse_query("a", "100") == ("a", 100)


def test_a_caption_finds_its_video_with_versions_and_a_thumbnail(state, synthetic_shards):
    from pipelines.shards.stream import split_videos

    video = next(split_videos([str(synthetic_shards)], "test"))
    answer = state.search(video["captions"][0], "3")
    assert answer["hits"][0]["video_id"] == video["id"] and len(answer["hits"]) == 3
    assert answer["index_version"] == state.snapshot.index.version
    assert answer["model"] == {"name": "tempme-synthetic", "version": state.snapshot.model_ref.version}
    scores = [h["score"] for h in answer["hits"]]
    assert scores == sorted(scores, reverse=True)
    jpeg = state.thumbnail(video["id"])
    assert jpeg[:2] == b"\xff\xd8" and answer["hits"][0]["thumbnail"].startswith(f"thumbnail/{video['id']}?v=")
    assert state.thumbnail("no-such-video") is None
    assert state.health()["videos"] == 16


def test_a_new_index_version_and_model_are_followed_and_never_mixed(state, served_index, synthetic_shards,
                                                                   untrained_adapter):
    index, uri = served_index
    before = state.snapshot
    assert not state.refresh()                                  # nothing new yet
    embed_corpus(EmbedOptions(shards=str(synthetic_shards), model=str(untrained_adapter), out=str(index), workers=1,
                              # another model version, published
                              batch_size=4, tracking_uri=uri))
    assert state.refresh()
    after = state.snapshot
    assert after.index.version > before.index.version
    assert after.model_ref.version != before.model_ref.version and after.model is not before.model
    assert after.index.model.same_version(after.model_ref)     # the snapshot pairs a version with its model
    old = before.search("a red square moving left", 2)[0]      # a query holding the old snapshot still works
    assert len(old) == 2 and before.index.model.same_version(before.model_ref)
    assert state.search("a red square moving left", 2)["model"]["version"] == after.model_ref.version


def test_an_index_that_is_not_there_is_unavailable_until_it_appears(trained_index, tmp_path):
    index, _, uri = trained_index
    state = SearchState(ServeOptions(index=str(tmp_path / "later"), tracking_uri=uri, refresh_s=3600))
    try:
        with pytest.raises(Unavailable, match="cannot be opened"):
            state.health()
        with pytest.raises(Unavailable):
            state.search("a red square", None)
        with pytest.raises(BadQuery):                           # a bad query is still the client's fault
            state.search("", None)
        shutil.copytree(index, tmp_path / "later")
        assert state.refresh() and state.health()["status"] == "ok"
    finally:
        state.close()


def test_a_batch_of_queries_is_answered_as_each_would_be_alone_and_its_thumbnails_need_no_lookup(state,
                                                                                                synthetic_shards):
    from pipelines.shards.stream import split_videos

    captions = [v["captions"][0] for v in list(split_videos([str(synthetic_shards)], "test"))[:3]]
    alone = [state.search(c, k) for c, k in zip(captions, (1, 4, 2))]
    together = state.search_many(list(zip(captions, (1, 4, 2))))
    assert [len(a["hits"]) for a in together] == [1, 4, 2] and {a["batch"] for a in together} == {3}
    for one, batched in zip(alone, together):
        assert [h["video_id"] for h in batched["hits"]] == [h["video_id"] for h in one["hits"]]
        assert [h["score"] for h in batched["hits"]] == pytest.approx([h["score"] for h in one["hits"]], abs=1e-4)

    def no_lookup(video_id):
        raise AssertionError(f"looked {video_id} up in the index")

    state.snapshot.index.find = no_lookup          # the hits just answered say where their thumbnails are
    jpeg = state.thumbnail(together[1]["hits"][3]["video_id"])
    assert jpeg[:2] == b"\xff\xd8"


def test_a_hit_of_a_moment_says_when_and_its_thumbnail_is_of_that_window():

    moment = Hit("talks/a.mp4", 0.5, "a.mp4", ("s3://b/corpus-000000.tar", 10, 20), "https://x/a.mp4", 8.0, 18.0,
                 ((16.0, 25.0, 0.4),))
    found = _hit_json(moment, version=7)
    assert (found["start"], found["end"]) == (8.0, 18.0)
    assert found["moments"] == [{"start": 16.0, "end": 25.0, "score": 0.4}]
    assert found["thumbnail"] == "thumbnail/talks%2Fa.mp4?v=7&t=8" and found["source"] == "https://x/a.mp4"
    whole = _hit_json(Hit("v1", 0.5, "a dog", ("s3://b/t.tar", 1, 2)), version=7)
    assert "start" not in whole and whole["thumbnail"] == "thumbnail/v1?v=7"
