"""The streaming reader: every item once per epoch across ranks and DataLoader workers, a fixed order per
(seed, epoch), a resume that reads nothing it skips, sequential reads, uint8 batches; also from Ray workers."""
from collections import Counter

import pytest
import torch
from pyarrow import fs as pafs

import pipelines.shards.reader as shards_module
import pipelines.shards.stream as stream_module
from pipelines.evaluate.retrieval import embed_videos, split_batches
from pipelines.shards.reader import SampleTable
from pipelines.shards.stream import ShardStream, split_videos, stream_batches
from pipelines.storage.location import Location


@pytest.fixture(scope="module")
def train(synthetic_shards):
    return SampleTable.build([str(synthetic_shards)], "train")      # 12 videos of 3 captions in 3 tars


@pytest.fixture
def reads(monkeypatch):
    """Every ranged read made in this process: (start, stop) byte offsets."""
    seen, read = [], stream_module._read_range
    monkeypatch.setattr(stream_module, "_read_range", lambda f, a, b: seen.append((a, b)) or read(f, a, b))
    return seen


def pairs_of(batches):
    return [(i, c) for b in batches for i, c in zip(b["id"], b["caption"])]


@pytest.mark.parametrize("lanes,workers", [(1, 0), (2, 2), (3, 0)])
def test_an_epoch_is_every_pair_once_across_ranks_and_workers(train, synthetic_shards, lanes, workers):
    expected = Counter((v["id"], c) for v in split_videos([str(synthetic_shards)], "train") for c in v["captions"])
    seen, per_rank = Counter(), []
    for rank in range(2):
        stream = ShardStream(train, batch_size=5, rank=rank, world_size=2, lanes=lanes, seed=3, epoch=1, window=4)
        got = pairs_of(stream_batches(stream, workers=workers))
        assert len(got) == (stream.total * (rank + 1) // 2 - stream.total * rank // 2)
        per_rank.append(len(got))
        seen.update(got)
    assert seen == expected and set(seen.values()) == {1}
    assert sum(per_rank) == 36 and abs(per_rank[0] - per_rank[1]) <= 1


def test_the_order_is_fixed_by_seed_and_epoch_and_shuffled_within_windows(train):
    def order(epoch, seed=0, window=4):
        return ShardStream(train, batch_size=4, seed=seed, epoch=epoch, window=window).order().tolist()
    first = order(0)
    assert first == order(0) and first != order(1) and first != order(0, seed=1)
    assert sorted(first) == sorted(order(1)) == list(range(36))
    # a window of 4 videos holds 12 pairs: each run of 12 in the order is one window's pairs
    windows = [sorted(first[i:i + 12]) for i in range(0, 36, 12)]
    assert all(w == list(range(w[0], w[0] + 12)) for w in windows)
    stream = ShardStream(train, batch_size=4, seed=0, epoch=1, window=4)
    assert [b["seq"] for b in stream_batches(stream, workers=0)] == list(range(9))
    assert len(pairs_of(stream_batches(stream, workers=0))) == 36


def test_videos_mode_in_shard_order_as_uint8_batches(synthetic_shards):
    table = SampleTable.build([str(synthetic_shards)], "test")
    batches = list(stream_batches(ShardStream(table, batch_size=3, mode="videos", lanes=2)))
    assert batches[0]["video"].shape == (3, 12, 3, 224, 224) and batches[0]["video"].dtype == torch.uint8
    assert batches[0]["mask"].dtype == torch.bool
    ids = [i for b in batches for i in b["id"]]
    assert ids == table.video_ids() and all(len(c) == 3 for b in batches for c in b["captions"])


@pytest.mark.parametrize("lanes,workers", [(1, 0), (2, 2)])
def test_a_resumed_epoch_continues_exactly_without_reading_what_it_skips(train, reads, monkeypatch, lanes, workers):
    monkeypatch.setattr(shards_module, "GAP", 0)     # read exactly the samples asked for, nothing between

    def run(skip, **kw):
        stream = ShardStream(train, batch_size=3, rank=1, world_size=2, lanes=lanes, seed=3, epoch=2, skip=skip,
                             window=2)
        return [(b["seq"], b["id"], b["caption"]) for b in stream_batches(stream, workers=workers, **kw)]

    whole = run(0)
    assert [seq for seq, *_ in whole] == list(range(len(whole))) == list(range(6))
    assert run(4) == whole[4:]
    if workers:
        return                      # reads happen in the DataLoader's processes: counted below in this one
    runs, read_run = [], stream_module._Reader._read_run
    monkeypatch.setattr(stream_module._Reader, "_read_run", lambda self, run: runs.append(run) or read_run(self, run))
    reads.clear()
    rest = run(4)
    needed = {vid for _, ids, _ in rest for vid in ids}
    assert {train.ids[r].as_py() for run in runs for r in run} == needed
    assert sum(b - a for a, b in reads) == sum(int(train.end[r] - train.start[r]) for run in runs for r in run)


def test_one_request_per_run_of_neighbouring_samples(train, reads):
    list(stream_batches(ShardStream(train, batch_size=4, mode="videos", window=1024), workers=0))
    assert len(reads) == len(train.tars)              # each tar's 4 samples in one request
    assert sorted(b - a for a, b in reads) == sorted(
        int(train.end[train.shard == t].max() - train.start[train.shard == t].min()) for t in range(3))


def test_a_corrupt_sample_is_an_error_naming_the_tar_and_video(train, monkeypatch):
    monkeypatch.setattr(stream_module, "parse_sample", lambda blob: (_ for _ in ()).throw(OSError("bad header")))
    with pytest.raises(ValueError, match=r"train-000000.tar: the sample of video '.+' at bytes \d+-\d+ cannot be read"):
        next(stream_batches(ShardStream(train, batch_size=2, shuffle=False), workers=0))


def test_bad_arguments(train):
    with pytest.raises(ValueError, match="mode must be one of"):
        ShardStream(train, batch_size=2, mode="frames")
    with pytest.raises(ValueError, match="rank must be in"):
        ShardStream(train, batch_size=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="window must be >= 1"):
        ShardStream(train, batch_size=2, window=0)


def test_two_ray_workers_split_the_split(synthetic_shards, ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=1)
    def read_rank(rank):
        table = SampleTable.build([str(synthetic_shards)], "train")
        stream = ShardStream(table, batch_size=2, mode="videos", rank=rank, world_size=2)
        return [i for b in stream_batches(stream) for i in b["id"]]

    parts = ray.get([read_rank.remote(r) for r in range(2)])
    everything = SampleTable.build([str(synthetic_shards)], "train").video_ids()
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(everything) and len(everything) == 12


def upload(local, uri: str) -> str:


    target = Location.of(uri)
    pafs.copy_files(str(local), target.path, destination_filesystem=target.fs)
    return uri


def test_shards_on_an_object_store_read_like_local_ones(synthetic_shards, s3_server, reads):
    uri = upload(synthetic_shards, f"{s3_server.prefix('stream')}/shards")
    remote, local = SampleTable.build([uri], "train"), SampleTable.build([str(synthetic_shards)], "train")
    assert remote.tars[0].startswith("s3://") and remote.ids == local.ids

    def epoch(table):
        stream = ShardStream(table, batch_size=4, rank=0, world_size=2, seed=5, epoch=3, window=3)
        return [(b["id"], b["caption"], b["video"].sum().item()) for b in stream_batches(stream, workers=0)]

    reads.clear()
    assert epoch(remote) == epoch(local)
    assert len(reads) <= 2 * 3           # one request per tar and window at most, never one per sample


def test_several_loader_workers_read_an_object_store_the_parent_already_uses(synthetic_shards, s3_server):
    """The parent has the S3 client's threads running (it built the table from the store); two DataLoader
    workers, started from a clean server process rather than forked from it, read the same batches."""
    uri = upload(synthetic_shards, f"{s3_server.prefix('workers')}/shards")
    remote, local = SampleTable.build([uri], "train"), SampleTable.build([str(synthetic_shards)], "train")

    def epoch(table, workers):
        stream = ShardStream(table, batch_size=4, lanes=2, seed=1, window=4)
        return [(b["seq"], b["id"], b["caption"], b["video"].sum().item())
                for b in stream_batches(stream, workers=workers)]

    assert epoch(remote, 2) == epoch(local, 0)


def test_evaluation_during_training_leaves_a_corrupt_sample_out_and_names_it(train, monkeypatch):
    """A corrupt sample of the evaluation split is left out of the ranking and named, not raised: raised, it
    would fail the worker and Ray Train would restart the run into it again."""

    real = stream_module.parse_sample
    first = train.ids[0].as_py()
    broken = {"n": 0}

    def parse(blob):
        meta, jpegs = real(blob)
        if meta["id"] == first:
            broken["n"] += 1
            raise OSError("bad header")
        return meta, jpegs

    monkeypatch.setattr(stream_module, "parse_sample", parse)

    class Model(torch.nn.Module):
        device = torch.device("cpu")

        def encode_video(self, frames, mask):
            return torch.ones(len(frames), 4)

        def encode_text(self, captions):
            return torch.ones(len(captions), 4)

    skipped = []
    found = embed_videos(Model(), split_batches(train, batch_size=1, loader_workers=0, skip_corrupt=True),
                         skipped=skipped)
    assert broken["n"] == 1 and len(skipped) == 1 and repr(first) in skipped[0]
    assert first not in found.video_ids and len(found.video_ids) == len(train) - 1
