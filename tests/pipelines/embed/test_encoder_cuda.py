"""The embedding actor on a GPU: the same embeddings as on the CPU, from real shard bytes."""
import json

import numpy as np
import pytest
import torch

import tempme
from pipelines.embed.encoder import VideoEmbedder, read_frames
from pipelines.model.adapter_bytes import adapter_files
from pipelines.preprocess.plan import ShardPlan
from pipelines.preprocess.sample import DecodeSettings, encode_sample
from pipelines.preprocess.sampling import DecodedVideo, StreamInfo
from pipelines.preprocess.sources import VideoInput
from pipelines.preprocess.writer import write_shard
from pipelines.storage.location import Location
from tests.pipelines.embed.test_encoder import rows_of

pytestmark = pytest.mark.gpu


def _write_shard(out, n_videos=6, frames=12, side=224):
    """A shard of `n_videos` moving-gradient videos, written by the preprocessing writer (no ffmpeg)."""
    settings = DecodeSettings(frames=frames, fps=1.0, resolution=side, quality=90, timeout=10)
    rng = np.random.default_rng(0)
    videos, results = [], []
    for i in range(n_videos):
        valid = frames - (i % 3) * 2                      # some videos shorter than the frame slots
        pixels = rng.integers(0, 255, (valid, side, side, 3), dtype=np.uint8)
        video = VideoInput(f"v{i}", f"/corpus/v{i}.mp4", (f"video {i}",), "test", f"row {i}")
        decoded = DecodedVideo(pixels, tuple(float(t) for t in range(valid)), valid, float(valid),
                               StreamInfo("mp4", "h264", side, side, 1.0, float(valid)))
        key, fragment, members = encode_sample(video, decoded, settings)
        results.append({"pos": i, "error": "", "uri": video.uri, "id": video.id, "split": "test", "key": key,
                        "fragment": fragment, "members": json.dumps(members), "captions": 1, "valid": valid})
        videos.append(video)
    write_shard(Location.of(str(out)), ShardPlan("test", "test-000000.tar", tuple(videos)), results)


def test_embedder_on_gpu_matches_cpu(tmp_path):
    _write_shard(tmp_path / "shards")
    model = tempme.load_model("tempme-b32-12f")
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.normal_(0, 0.02)
    adapter = adapter_files(model.save_adapter(tmp_path / "adapter"))
    rows = rows_of(tmp_path / "shards", tmp_path / "plan")
    batch = read_frames(rows)
    assert batch["frames"].dtype == np.uint8       # what travels to the GPU

    gpu = VideoEmbedder(adapter, use_gpu=True)
    assert gpu.device == "cuda" and gpu.model.dtype == torch.bfloat16
    on_gpu = gpu(batch)
    on_cpu = VideoEmbedder(adapter, use_gpu=False, precision="fp32")(batch)

    assert list(on_gpu["error"]) == [""] * len(rows["video_id"])
    cosine = (on_gpu["embedding"] * on_cpu["embedding"]).sum(1)
    assert cosine.min() >= 0.999, cosine
