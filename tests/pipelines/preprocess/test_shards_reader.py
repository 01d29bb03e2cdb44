"""The shard reader: frame content survives the round trip, epochs are complete and disjoint across ranks
and DataLoader workers (also from 2 Ray workers), augmentation is one draw per video."""
import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipelines.preprocess import PreprocessOptions, run_preprocess
from pipelines.shards import (SampleReader, ShardDataset, collate, frames_to_tensor, read_summary, shard_index,
                              shard_paths)
from tempme import CLIP_MEAN, CLIP_STD
from tests.fixtures.video_fixtures import encode_frames, gray_level, gray_steps


def pixels(video):
    """Normalised [T,3,H,W] back to 0-255 RGB."""
    return video * torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255 + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255


@pytest.fixture(scope="module")
def pattern_shards(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("patterns")
    red = np.zeros((30, 48, 64, 3), np.uint8)
    red[..., 0] = 255
    encode_frames(root / "red.mp4", red, fps=10)                       # 3 s of pure red
    encode_frames(root / "steps.mp4", gray_steps(20, fps=5), fps=5)    # grey level = the second
    rows = [{"video": "red.mp4", "id": "red", "captions": ["a red screen"], "split": "train"},
            {"video": "steps.mp4", "id": "steps", "captions": ["grey steps", "counting up"], "split": "train"}]
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "shards"
    report = run_preprocess(PreprocessOptions(out=str(out), manifest=str(root / "m.jsonl"), resolution=64,
                                              quality=95, decoders=2), log=lambda line: None)
    assert report.ok
    return out


def test_round_trip_keeps_colour_sampling_and_mask(pattern_shards):
    items = {it["id"]: it for it in ShardDataset(str(pattern_shards), "train", mode="videos")}
    red = items["red"]
    assert red["video"].shape == (12, 3, 64, 64) and red["video"].dtype == torch.float32
    assert red["mask"].tolist() == [True] * 3 + [False] * 9
    rgb = pixels(red["video"][:3]).mean(dim=(0, 2, 3))
    assert rgb[0] > 235 and rgb[1] < 20 and rgb[2] < 20
    assert torch.all(red["video"][3:] == 0)                            # padding: zeros after normalisation
    steps = items["steps"]
    assert steps["mask"].all() and steps["captions"] == ["grey steps", "counting up"]
    seconds = np.linspace(0, 19, 12, dtype=int)
    np.testing.assert_allclose(pixels(steps["video"]).mean(dim=(1, 2, 3)).numpy(),
                               [gray_level(s) for s in seconds], atol=3)


def test_pairs_epoch_is_every_pair_once_across_ranks_and_workers(synthetic_shards):
    expected = Counter()
    for s in ShardDataset(str(synthetic_shards), "train", mode="videos"):
        expected.update((s["id"], c) for c in s["captions"])
    seen, per_rank = Counter(), []
    for rank in range(2):
        ds = ShardDataset(str(synthetic_shards), "train", mode="pairs", rank=rank, world_size=2, seed=3, epoch=1)
        got = [(i, c) for b in DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate)
               for i, c in zip(b["id"], b["caption"])]
        per_rank.append(len(got))
        assert len(got) == len(ds)
        seen.update(got)
    assert seen == expected and set(seen.values()) == {1}
    assert sum(per_rank) == ds.total == 12 * 3 and abs(per_rank[0] - per_rank[1]) <= 1


def test_epochs_reshuffle_and_seeds_repeat(synthetic_shards):
    def order(epoch, seed=0):
        return ShardDataset(str(synthetic_shards), "train", seed=seed, epoch=epoch).epoch_order()
    first = order(0)
    assert first == order(0) and first != order(1) and first != order(0, seed=1) and sorted(first) == sorted(order(1))
    captions = {it["id"]: it["captions"] for it in ShardDataset(str(synthetic_shards), "train", mode="videos")}
    ds = ShardDataset(str(synthetic_shards), "train", seed=0, epoch=0)
    ds.set_epoch(1)
    got = [(it["id"], it["caption"]) for _, it in zip(range(5), ds)]
    assert got == [(ds.samples[i].id, captions[ds.samples[i].id][c]) for i, c in order(1)[:5]]


def test_videos_mode_in_shard_order_with_batches(synthetic_shards):
    ds = ShardDataset(str(synthetic_shards), "test", mode="videos")
    batches = list(DataLoader(ds, batch_size=3, collate_fn=collate))
    assert batches[0]["video"].shape == (3, 12, 3, 224, 224) and batches[0]["mask"].dtype == torch.bool
    ids = [i for b in batches for i in b["id"]]
    assert ids == sorted(ids) and len(ids) == read_summary(str(synthetic_shards))["splits"]["test"]["samples"]
    assert all(len(c) == 3 for b in batches for c in b["captions"])


def test_augment_is_one_draw_for_all_frames_and_seeded(pattern_shards):
    sample = next(s for s in shard_index(str(pattern_shards), "train") if s.id == "red")
    reader = SampleReader()
    meta, jpegs = reader.read(sample)
    reader.close()
    assert meta["valid"] == len(jpegs) == 3
    plain, _ = frames_to_tensor(jpegs, 12)
    changed = 0
    for seed in range(6):
        video, mask = frames_to_tensor(jpegs, 12, augment=True, seed=seed)
        assert torch.allclose(video[0], video[1], atol=1e-6) and torch.allclose(video[0], video[2], atol=1e-6)
        assert torch.equal(video, frames_to_tensor(jpegs, 12, augment=True, seed=seed)[0])
        changed += not torch.allclose(video[:3], plain[:3], atol=1e-3)
    assert changed >= 3


def test_two_ray_workers_split_the_split(synthetic_shards, ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=1)
    def read_rank(rank):
        ds = ShardDataset(str(synthetic_shards), "train", mode="videos", rank=rank, world_size=2)
        loader = DataLoader(ds, batch_size=2, collate_fn=collate)
        return [i for b in loader for i in b["id"]]

    parts = ray.get([read_rank.remote(r) for r in range(2)])
    everything = [s.id for s in shard_index(str(synthetic_shards), "train")]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(everything) and len(everything) == 12


def test_clear_errors(synthetic_shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished shards of split 'val'"):
        ShardDataset(str(synthetic_shards), "val")
    with pytest.raises(ValueError, match="mode must be one of"):
        ShardDataset(str(synthetic_shards), "train", mode="frames")
    with pytest.raises(ValueError, match="rank must be in"):
        ShardDataset(str(synthetic_shards), "train", rank=2, world_size=2)
    assert [p.rsplit("/", 1)[1] for p in shard_paths(str(synthetic_shards), "train")] == \
        ["train-000000.tar", "train-000001.tar", "train-000002.tar"]


def test_a_resumed_epoch_continues_in_order_without_reading_what_it_skips(synthetic_shards, monkeypatch):
    def pairs(skip, workers):
        ds = ShardDataset(str(synthetic_shards), "train", mode="pairs", rank=1, world_size=2, seed=3, epoch=2,
                          skip=skip)
        return [(it["id"], it["caption"]) for it in DataLoader(ds, batch_size=None, num_workers=workers)]

    whole = pairs(0, 0)
    assert pairs(0, 2) == whole                          # the same order whatever the DataLoader worker count
    assert pairs(7, 2) == whole[7:] == pairs(7, 0)       # a resume continues exactly where it stopped
    reads, read = [], SampleReader.read
    monkeypatch.setattr(SampleReader, "read", lambda self, sample: reads.append(sample.id) or read(self, sample))
    assert len(pairs(7, 0)) == len(reads) == len(whole) - 7    # nothing skipped was read
