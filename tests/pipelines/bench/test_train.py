"""The training benchmark's corpus of any size: hard-linked copies of real shards that read as one split."""
import os

from pipelines.bench.train import replicate_shards
from pipelines.shards.reader import SampleTable
from pipelines.shards.stream import ShardStream, stream_batches


def test_replicated_shards_hold_the_asked_number_of_distinct_videos(synthetic_shards, tmp_path):
    grown = replicate_shards(synthetic_shards, tmp_path / "grown", 30)
    table = SampleTable.build([str(grown)], "train")
    assert len(table) == 30 and len(set(table.video_ids())) == 30
    assert os.stat(grown / "train-000000.tar").st_ino == os.stat(synthetic_shards / "train-000000.tar").st_ino
    assert SampleTable.build([str(grown)], "test").ids == SampleTable.build([str(synthetic_shards)], "test").ids
    stream = ShardStream(table, batch_size=8, mode="videos")
    assert sum(len(b["id"]) for b in stream_batches(stream, workers=0)) == 30
