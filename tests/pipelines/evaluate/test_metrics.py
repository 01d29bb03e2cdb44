"""Retrieval metrics against similarity matrices worked out by hand."""
import numpy as np
import pytest

from pipelines.evaluate.metrics import embedding_ranks, recall_curve, retrieval_metrics, retrieval_ranks


def test_perfect_diagonal_ranks_everything_first():
    metrics = retrieval_metrics(np.eye(4), [0, 1, 2, 3])
    for direction in ("t2v", "v2t"):
        assert metrics[f"{direction}_r1"] == 100.0
        assert metrics[f"{direction}_medr"] == 1.0
        assert metrics[f"{direction}_meanr"] == 1.0
        assert metrics[f"{direction}_rsum"] == 300.0


def test_ranks_of_a_hand_made_matrix():
    sim = np.array([[0.9, 0.1, 0.5],    # text 0 -> video 0: rank 1
                    [0.8, 0.2, 0.7],    # text 1 -> video 1: two videos higher, rank 3
                    [0.1, 0.6, 0.4]])   # text 2 -> video 2: video 1 higher, rank 2
    ranks = retrieval_ranks(sim, [0, 1, 2])
    assert ranks.t2v.tolist() == [1, 3, 2]
    # video 0: its text scores 0.9, the best: rank 1; video 1: its text 0.2 < 0.6 and 0.1 < 0.2: rank 2;
    # video 2: its text 0.4 < 0.5 and 0.7: rank 3.
    assert ranks.v2t.tolist() == [1, 2, 3]
    metrics = retrieval_metrics(sim, [0, 1, 2])
    assert metrics["t2v_r1"] == pytest.approx(100 / 3)
    assert metrics["t2v_r5"] == 100.0
    assert metrics["t2v_medr"] == 2.0
    assert metrics["t2v_meanr"] == 2.0
    assert metrics["t2v_rsum"] == pytest.approx(100 / 3 + 200)


def test_ties_count_against_the_target():
    # A collapsed model (every score equal) must not score a perfect R@1.
    ranks = retrieval_ranks(np.ones((3, 3)), [0, 1, 2])
    assert ranks.t2v.tolist() == [3, 3, 3]
    assert ranks.v2t.tolist() == [3, 3, 3]
    # One wrong video tied with the target: rank 2, not 1.
    assert retrieval_ranks(np.array([[0.5, 0.5, 0.1]]), [0]).t2v.tolist() == [2]


def test_several_captions_per_video():
    # Texts 0, 1 describe video 0; texts 2, 3 describe video 1.
    sim = np.array([[0.2, 0.9],     # text 0 prefers the wrong video: t2v rank 2
                    [0.8, 0.3],     # text 1 right: rank 1
                    [0.1, 0.7],     # text 2 right: rank 1
                    [0.6, 0.5]])    # text 3 prefers the wrong video: rank 2
    ranks = retrieval_ranks(sim, [0, 0, 1, 1])
    assert ranks.t2v.tolist() == [2, 1, 1, 2]
    # Video 0: best caption is text 1 (0.8); no other video's text scores >= 0.8 -> rank 1.
    # Video 1: best caption is text 2 (0.7); text 0 (0.9) of video 0 is higher -> rank 2. Its own other
    # caption (text 3, 0.5) never counts against it.
    assert ranks.v2t.tolist() == [1, 2]
    metrics = retrieval_metrics(sim, [0, 0, 1, 1])
    assert metrics["t2v_r1"] == 50.0
    assert metrics["v2t_r1"] == 50.0
    assert metrics["v2t_medr"] == 1.5


def test_videos_without_captions_are_not_v2t_queries():
    sim = np.array([[0.9, 0.1, 0.95]])          # video 2 is a distractor with no caption
    ranks = retrieval_ranks(sim, [0])
    assert ranks.t2v.tolist() == [2]
    assert ranks.v2t.tolist() == [1]


def test_recall_at_50_and_curve():
    n = 60
    sim = -np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(float)
    sim[np.arange(n), np.arange(n)] = -100.0       # every target is ranked last (rank 60)
    metrics = retrieval_metrics(sim, np.arange(n))
    assert metrics["t2v_r50"] == 0.0 and metrics["t2v_medr"] == 60.0
    curve = recall_curve(np.array([1, 2, 2, 10]), 10)
    assert curve.tolist()[:3] == [25.0, 75.0, 75.0] and curve[-1] == 100.0


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="one video index per text"):
        retrieval_ranks(np.eye(3), [0, 1])
    with pytest.raises(ValueError, match="outside"):
        retrieval_ranks(np.eye(2), [0, 2])


def test_nan_similarities_are_an_error_not_a_hit():
    sim = np.eye(3)
    sim[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 similarities are NaN or infinite \(texts \[1\], videos \[2\]\)"):
        retrieval_ranks(sim, [0, 1, 2])


def test_blocks_of_texts_rank_exactly_like_the_whole_matrix():
    rng = np.random.default_rng(0)
    texts = rng.standard_normal((23, 8)).astype(np.float32)
    videos = rng.standard_normal((9, 8)).astype(np.float32)
    videos[4] = videos[3]                                    # a tie between two videos
    owner = rng.integers(0, 8, 23)                           # video 8 has no caption
    whole = retrieval_ranks(texts @ videos.T, owner)
    for block in (1, 5, 23, 4096):
        blocked = embedding_ranks(texts, videos, owner, block=block)
        assert blocked.t2v.tolist() == whole.t2v.tolist() and blocked.v2t.tolist() == whole.v2t.tolist()
    assert len(whole.v2t) == len(set(owner.tolist()))


def test_video_to_text_protocols_differ_only_in_how_other_videos_count():
    # Video 1's best caption (text 2, 0.7) is beaten by both captions of video 0 (0.9 and 0.8).
    sim = np.array([[0.2, 0.9],
                    [0.8, 0.8],
                    [0.1, 0.7],
                    [0.6, 0.5]])
    authors = retrieval_ranks(sim, [0, 0, 1, 1], protocol="per_video")
    every = retrieval_ranks(sim, [0, 0, 1, 1], protocol="per_caption")
    assert authors.v2t.tolist() == [1, 2]     # video 0 counts once, by its best caption
    assert every.v2t.tolist() == [1, 3]       # each of video 0's captions counts
    assert authors.t2v.tolist() == every.t2v.tolist()
    one_each = np.random.default_rng(1).standard_normal((6, 6))
    assert retrieval_ranks(one_each, range(6), "per_video").v2t.tolist() == \
        retrieval_ranks(one_each, range(6), "per_caption").v2t.tolist()
    with pytest.raises(ValueError, match="protocol must be one of"):
        retrieval_ranks(sim, [0, 0, 1, 1], protocol="best")


def test_blocks_keep_each_videos_captions_together_for_the_authors_protocol():
    rng = np.random.default_rng(2)
    texts = rng.standard_normal((40, 8)).astype(np.float32)
    videos = rng.standard_normal((7, 8)).astype(np.float32)
    owner = rng.integers(0, 7, 40)
    for protocol in ("per_video", "per_caption"):
        whole = retrieval_ranks(texts @ videos.T, owner, protocol)
        for block in (1, 3, 8):
            blocked = embedding_ranks(texts, videos, owner, block=block, protocol=protocol)
            assert blocked.v2t.tolist() == whole.v2t.tolist() and blocked.t2v.tolist() == whole.t2v.tolist()
