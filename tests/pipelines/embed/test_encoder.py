"""The two embedding stages by themselves: uint8 frames from the CPU stage, normalised and encoded by the actor."""
import numpy as np
import pytest
import torch

from pipelines.embed.encoder import VideoEmbedder, read_frames, sample_row
from pipelines.embed.model import adapter_files
from pipelines.model_store import model_from_adapter, resolve_model
from pipelines.shards import SampleReader, frames_to_tensor, shard_samples


def rows_of(shards, split="test"):
    samples = shard_samples(str(shards), split)
    rows = [sample_row(s) for s in samples]
    return samples, {k: np.asarray([r[k] for r in rows], dtype=object) for k in rows[0]}


def test_frames_travel_as_uint8_and_embed_as_the_float_reader_would(synthetic_shards, trained_adapter):
    samples, rows = rows_of(synthetic_shards)
    frames = read_frames(rows)
    assert frames["frames"].dtype == np.uint8 and frames["frames"].shape[1:3] == (12, 3)
    assert list(frames["error"]) == [""] * len(samples) and all(frames["caption"])
    out = VideoEmbedder(adapter_files(trained_adapter), precision="fp32")(frames)

    model = model_from_adapter(trained_adapter).for_inference("fp32")
    reader = SampleReader()
    video, mask = zip(*(frames_to_tensor(reader.read(s)[1], 12) for s in samples))
    with torch.inference_mode():
        expected = model.encode_video(torch.stack(video), torch.stack(mask)).numpy()
    assert np.allclose(out["embedding"], expected, atol=1e-5)
    assert list(out["thumb_offset"]) == [s.members["000.jpg"][0] for s in samples]


def test_a_sample_that_does_not_fit_the_model_is_an_error_row(synthetic_shards, trained_adapter):
    _, rows = rows_of(synthetic_shards)
    frames = read_frames(rows)
    frames["frames"] = frames["frames"][:, :, :, :100, :100]      # as if preprocessed at another resolution
    out = VideoEmbedder(adapter_files(trained_adapter))(frames)
    assert all("the model takes" in e for e in out["error"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_an_actor_that_reserved_a_gpu_but_sees_no_cuda_fails_loudly(trained_adapter):
    with pytest.raises(RuntimeError, match="reserved a GPU but sees no CUDA"):
        VideoEmbedder(adapter_files(trained_adapter), use_gpu=True)


def test_decoding_runs_in_tasks_of_its_own_not_inside_the_model_actors(ray_cluster, synthetic_shards,
                                                                        trained_adapter, tmp_path):
    import ray

    from pipelines.embed.job import _pipeline

    from pipelines.index import IndexStore

    samples = shard_samples(str(synthetic_shards), "test")
    model, _ = resolve_model(str(trained_adapter))
    pipeline = _pipeline(ray, str(synthetic_shards), samples, adapter_files(trained_adapter),
                         IndexStore(tmp_path).uri("videos.lance"), model, (1, 1), 2, "cpu", 1, "fp32", False, 4)
    rows = sum(len(b["video_id"]) for b in pipeline.iter_batches(batch_size=None, batch_format="numpy"))
    stats = pipeline.stats()
    assert rows == len(samples)
    assert "MapBatches(read_frames)->MapBatches(VideoEmbedder)" not in stats and "MapBatches(read_frames)" in stats
