"""A library of long, uncaptioned videos: a folder walked for its videos, each cut into windows (moments),
embedded window by window, searched by video with the matching window's time; incremental as ever."""
import numpy as np
import pytest

from pipelines.embed import EmbedOptions, TextSearch, embed_corpus
from pipelines.index import IndexStore
from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.preprocess.job import OptionsError
from pipelines.shards.format import sample_table
from pipelines.storage.location import Location
from tests.fixtures.video_fixtures import lavfi_video

WINDOWS = {"talks/a.mp4": [(0.0, 10.0), (8.0, 18.0), (16.0, 25.0)], "b.mp4": [(0.0, 10.0), (8.0, 12.0)]}


def preprocess(library, out, **options):
    return run_preprocess(PreprocessOptions(out=str(out), videos=str(library), samples_per_shard=4, decoders=2,
                                            **{"segment_seconds": 10, "segment_overlap": 2, **options}),
                          log=lambda line: None)


def windows_of(rows):
    found = {}
    for r in rows:
        found.setdefault(r["video_id"], []).append((r["window_start"], r["window_end"]))
    return {v: sorted(w) for v, w in found.items()}


@pytest.mark.slow
def test_a_folder_of_long_videos_is_searched_by_moment(ray_cluster, untrained_adapter, tmp_path):
    library = tmp_path / "library"
    (library / "talks").mkdir(parents=True)
    lavfi_video(library / "talks" / "a.mp4", duration=25, fps=10, size=(64, 48))
    lavfi_video(library / "b.mp4", duration=12, fps=10, size=(64, 48), source="smptebars")
    (library / "notes.txt").write_text("not a video")
    out, index, tracking = tmp_path / "shards", tmp_path / "index", f"sqlite:///{tmp_path}/mlflow.db"

    report = preprocess(library, out)
    assert report.ok and report.decoded_by["seek"] + report.decoded_by["sequential"] == 5
    samples = sample_table(Location.of(str(out))).to_table().to_pylist()
    assert {r["split"] for r in samples} == {"corpus"} and len({r["key"] for r in samples}) == 5
    assert windows_of([{**r, "video_id": r["id"]} for r in samples]) == WINDOWS

    first = embed_corpus(EmbedOptions(shards=str(out), model=str(untrained_adapter), out=str(index), workers=1,
                                      batch_size=4, tracking_uri=tracking))
    assert (first.embedded, first.failed) == (5, 0)
    rows = IndexStore(index).dataset().to_table().to_pylist()
    assert windows_of(rows) == WINDOWS
    assert {r["video_id"]: r["caption"] for r in rows} == {"talks/a.mp4": "a.mp4", "b.mp4": "b.mp4"}  # no caption
    assert len({r["thumb_offset"] for r in rows}) == 5          # each window its own thumbnail

    hits, = TextSearch(index).search("a test pattern", k=2, moments=2)
    assert sorted(h.video_id for h in hits) == sorted(WINDOWS)  # a video once, however many windows match
    for hit in hits:
        assert (hit.start, hit.end) in WINDOWS[hit.video_id] and hit.source.endswith(hit.video_id)
        others = [(a, b) for a, b, _ in hit.moments]
        assert len(others) == len(WINDOWS[hit.video_id]) - 1 and (hit.start, hit.end) not in others
        assert all(score <= hit.score for _, _, score in hit.moments)
    query = TextSearch(index).encode(["a test pattern"])[0]
    best = max(rows, key=lambda r: float(np.dot(r["embedding"], query)))
    assert (hits[0].video_id, hits[0].start) == (best["video_id"], best["window_start"])

    again = embed_corpus(EmbedOptions(shards=str(out), model=str(untrained_adapter), out=str(index), workers=1,
                                      batch_size=4, tracking_uri=tracking))
    assert (again.already_done, again.embedded) == (5, 0)      # incremental by window

    (library / "b.mp4").unlink()
    assert preprocess(library, out).removed == 1
    embed_corpus(EmbedOptions(shards=str(out), model=str(untrained_adapter), out=str(index), workers=1, batch_size=4,
                              tracking_uri=tracking))
    assert windows_of(IndexStore(index).dataset().to_table().to_pylist()) == {"talks/a.mp4": WINDOWS["talks/a.mp4"]}

    with pytest.raises(OptionsError, match="segment_seconds"):
        preprocess(library, out, segment_seconds=20)
