"""The two embedding stages by themselves: uint8 frames from the CPU stage, normalised and encoded by the actor."""
import numpy as np
import pytest
import torch

from pipelines.embed.encoder import VideoEmbedder, read_frames
from pipelines.embed.job import _pipeline
from pipelines.embed.options import EmbedOptions
from pipelines.index import IndexStore
from pipelines.model.adapter_bytes import adapter_files
from pipelines.model.registry import model_from_adapter, resolve_model
from pipelines.shards.frames import frames_to_tensor
from pipelines.shards.reader import SampleReader
from tests.pipelines.embed.test_plan import planned, rows_of


def test_frames_travel_as_uint8_and_embed_as_the_float_reader_would(synthetic_shards, trained_adapter, tmp_path):
    rows = rows_of(synthetic_shards, tmp_path)
    frames = read_frames(rows)
    assert frames["frames"].dtype == np.uint8 and frames["frames"].shape[1:3] == (12, 3)
    assert list(frames["error"]) == [""] * len(rows["video_id"]) and all(frames["caption"])
    out = VideoEmbedder(adapter_files(trained_adapter), precision="fp32")(frames)

    model = model_from_adapter(trained_adapter).for_inference("fp32")
    reader = SampleReader()
    samples = list(zip(rows["tar"], rows["start"], rows["end"]))
    video, mask = zip(*(frames_to_tensor(reader.read(*s)[1], 12) for s in samples))
    with torch.inference_mode():
        expected = model.encode_video(torch.stack(video), torch.stack(mask)).numpy()
    assert np.allclose(out["embedding"], expected, atol=1e-5)
    with open(rows["tar"][0], "rb") as tar:          # the thumbnail's bytes are the first frame's JPEG
        tar.seek(out["thumb_offset"][0])
        assert tar.read(int(out["thumb_size"][0])) == reader.read(*samples[0])[1][0]


def test_a_sample_that_does_not_fit_the_model_is_an_error_row(synthetic_shards, trained_adapter, tmp_path):
    rows = rows_of(synthetic_shards, tmp_path)
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

    plan, _ = planned(synthetic_shards, tmp_path / "plan")
    model, _ = resolve_model(str(trained_adapter))
    options = EmbedOptions(shards=str(synthetic_shards), model=str(trained_adapter), out=str(tmp_path), batch_size=2,
                           device="cpu", precision="fp32", part_rows=4)
    pipeline = _pipeline(ray, options, plan, adapter_files(trained_adapter), IndexStore(tmp_path).uri("videos.lance"),
                         model)
    rows = sum(len(b["video_id"]) for b in pipeline.iter_batches(batch_size=None, batch_format="numpy"))
    stats = pipeline.stats()
    assert rows == plan.todo == 16
    assert "MapBatches(read_frames)->MapBatches(VideoEmbedder)" not in stats and "MapBatches(read_frames)" in stats
