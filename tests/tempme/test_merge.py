import pytest
import torch

from tempme.merge import alternation, bipartite_soft_matching


def _tokens(seqs=3, length=21, channels=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(seqs, length, channels, generator=g), torch.rand(seqs, length, 1, generator=g) * 3 + 1


@pytest.mark.parametrize("cls", [1, 2, 3, 4])
def test_sizes_add_up_and_weighted_mean_is_preserved(cls):
    x, size = _tokens()
    r = 5
    matching = bipartite_soft_matching(x, r, cls)
    merged, merged_size = matching.merge_weighted(x, size)
    assert merged.shape == (3, 21 - r, 8)
    torch.testing.assert_close(merged_size.sum(1), size.sum(1))
    torch.testing.assert_close((merged * merged_size).sum(1), (x * size).sum(1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cls", [1, 2, 3])
def test_cls_tokens_never_move_or_merge(cls):
    x, size = _tokens()
    x[:, :cls] = x[:, cls:cls + 1]  # CLS identical to a patch: most similar pair, yet never merged
    matching = bipartite_soft_matching(x, 9, cls)
    merged, merged_size = matching.merge_weighted(x, size)
    torch.testing.assert_close(merged[:, :cls], x[:, :cls])
    torch.testing.assert_close(merged_size[:, :cls], size[:, :cls])


def test_alternation_follows_cls_parity():
    a, b = alternation(10, cls=2)
    positions = list(range(10))
    assert positions[a] == [2, 4, 6, 8] and positions[b] == [3, 5, 7, 9]   # c even: A = even patch index
    a, b = alternation(10, cls=3)
    assert positions[a] == [4, 6, 8] and positions[b] == [3, 5, 7, 9]      # c odd: A = odd patch index


def test_most_similar_pair_merges_into_b_and_unmerged_keep_order():
    # CLS at position 0, patches at 1..6: A = even positions 2, 4, 6; B = odd positions 1, 3, 5
    x = torch.eye(7)[None] * 1.0
    x[0, 4] = x[0, 5]                  # position 4 (A) duplicates position 5 (B)
    matching = bipartite_soft_matching(x, 1, cls=1)
    merged, size = matching.merge_weighted(x, torch.ones(1, 7, 1))
    # layout: [CLS, unmerged A (2, 6) in order, B (1, 3, 5)]
    expected_rows = [x[0, 0], x[0, 2], x[0, 6], x[0, 1], x[0, 3], x[0, 5]]
    torch.testing.assert_close(merged[0], torch.stack(expected_rows))
    assert size[0, :, 0].tolist() == [1, 1, 1, 1, 1, 2]


def test_too_many_merges_is_an_error():
    x, _ = _tokens(length=7)
    with pytest.raises(ValueError, match="cannot merge 4 tokens"):
        bipartite_soft_matching(x, 4, cls=1)
