"""The model: LoRA placement, equivalence with open_clip and the reference encoder, adapters, bad inputs."""
import pytest
import torch
import torch.nn.functional as F

import tempme
from tempme.reference import ReferenceVideoEncoder
from tests.fixtures.model_fixtures import random_clip


@pytest.fixture(scope="module")
def tiny_models(tiny_clip_checkpoint):
    return {p: tempme.load_model(f"{p}-tiny-12f", pretrained=str(tiny_clip_checkpoint))
            for p in ("tempme", "tome", "lora")}


def test_only_lora_and_clip_positional_embeddings_get_gradients(tiny_models, random_video):
    model = tiny_models["tempme"]
    model.train()
    loss = model.encode_video(random_video(1)).sum() + model.encode_text(["a dog"]).sum()
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.eval()
    assert with_grad == set(model.trainable_parameters())
    assert all("lora_" in n or n.startswith("video.clip_pos.") for n in with_grad)
    assert {n for n in with_grad if "clip_pos" in n} == {"video.clip_pos.8", "video.clip_pos.9", "video.clip_pos.10"}
    assert any(n.startswith("text.") for n in with_grad) and any(n.startswith("video.") for n in with_grad)


def test_lora_preset_at_init_equals_open_clip_frame_by_frame(tiny_models, random_video):
    """No merging and B = 0: the fused-attention model must compute exactly open_clip's CLIP."""
    clip = random_clip()
    video = random_video(2)
    with torch.no_grad():
        ours = tiny_models["lora"].encode_video(video)
        frames = F.normalize(clip.encode_image(video.flatten(0, 1)), dim=-1).view(2, 12, -1)
        expected = F.normalize(frames.mean(1), dim=-1)
        text_ours = tiny_models["lora"].encode_text(["a red square moving left", "a cat"])
        text_expected = F.normalize(clip.encode_text(open_clip_tokens(["a red square moving left", "a cat"])), dim=-1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text_ours, text_expected, rtol=1e-4, atol=1e-5)


def open_clip_tokens(texts):
    import open_clip
    return open_clip.get_tokenizer("TempMe-Tiny")(texts)  # 77 tokens: causal attention makes EOT equal at 32


@pytest.mark.parametrize("method", ["tempme", "tome"])
def test_merging_model_at_init_equals_the_reference_encoder(tiny_models, method, random_video):
    model = tiny_models[method]
    reference = ReferenceVideoEncoder(random_clip().visual, model.config.schedule, 12)
    video = random_video(2, seed=3)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(video, mask), reference(video, mask), rtol=1e-4, atol=1e-5)


def test_masked_frames_are_ignored(tiny_models, random_video):
    model = tiny_models["tempme"]
    video = random_video(1)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 9:] = False
    with torch.no_grad():
        full = model.encode_video_full(video, mask)
    expected = F.normalize(full.frame_embeddings[0, :9].mean(0), dim=-1)
    torch.testing.assert_close(full.embedding[0], expected)


def test_batch_with_different_valid_frame_counts_matches_one_by_one(tiny_models, random_video):
    model = tiny_models["tempme"]
    video = random_video(3)
    mask = torch.tensor([[True] * 12, [True] * 5 + [False] * 7, [True] + [False] * 11])
    with torch.no_grad():
        batched = model.encode_video(video, mask)
        single = torch.cat([model.encode_video(video[i:i + 1], mask[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_adapter_round_trip_gives_identical_embeddings(tiny_models, tiny_clip_checkpoint, tmp_path, random_video):
    model = tiny_models["tempme"]
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.normal_(0, 0.05)
    video, texts = random_video(1), ["a blue circle"]
    with torch.no_grad():
        before_v, before_t = model.encode_video(video), model.encode_text(texts)
    directory = model.save_adapter(tmp_path / "adapter")
    size = sum(f.stat().st_size for f in directory.iterdir())
    assert size < 1_000_000  # the adapter alone, not the backbone
    loaded = tempme.load_model(adapter=directory, pretrained=str(tiny_clip_checkpoint))
    assert loaded.config == model.config.replace(pretrained=str(tiny_clip_checkpoint))
    with torch.no_grad():
        assert torch.equal(loaded.encode_video(video), before_v)
        assert torch.equal(loaded.encode_text(texts), before_t)
    fresh = tempme.load_model("tempme-tiny-12f", pretrained=str(tiny_clip_checkpoint))
    with torch.no_grad():
        assert not torch.allclose(fresh.encode_video(video), before_v)


def test_similarity_is_scaled_cosine(tiny_models):
    model = tiny_models["lora"]
    t = F.normalize(torch.randn(3, 64), dim=-1)
    v = F.normalize(torch.randn(4, 64), dim=-1)
    torch.testing.assert_close(model.similarity(t, v), model.logit_scale * (t @ v.t()))


def test_bad_video_inputs_have_clear_errors(tiny_models, random_video):
    model = tiny_models["tempme"]
    with pytest.raises(ValueError, match="frames must be 224x224, got 112x112"):
        model.encode_video(torch.zeros(1, 12, 3, 112, 112))
    with pytest.raises(ValueError, match="zero valid frames"):
        model.encode_video(random_video(2), torch.tensor([[True] * 12, [False] * 12]))
    with pytest.raises(ValueError, match="encodes 12 frames per video, got 6"):
        model.encode_video(torch.zeros(1, 6, 3, 224, 224))
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text("not a list")


def test_missing_and_malformed_checkpoints_name_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(tempme.CheckpointError, match=f"{missing}: no such checkpoint file"):
        tempme.load_model("lora-tiny-12f", pretrained=str(missing))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(tempme.CheckpointError, match="garbage.pt: not a PyTorch checkpoint"):
        tempme.load_model("lora-tiny-12f", pretrained=str(garbage))
    wrong = tmp_path / "b32.pt"
    torch.save(random_clip(backbone="ViT-B-32").state_dict(), wrong)
    with pytest.raises(tempme.CheckpointError, match="b32.pt: not a checkpoint of this backbone: .*wrong shapes"):
        tempme.load_model("lora-tiny-12f", pretrained=str(wrong))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": EvilPayload()}, path)
    with pytest.raises(tempme.CheckpointError, match="evil.pt: not a PyTorch checkpoint that loads without unpickling"):
        tempme.load_model("lora-tiny-12f", pretrained=str(path))


class EvilPayload:
    pass


def test_random_backbones_are_the_same_in_every_process(random_video):
    """Workers and actors each build the model; without weights they must still agree."""
    torch.manual_seed(123)
    first = tempme.load_model("lora-tiny-12f")
    torch.manual_seed(456)
    second = tempme.load_model("lora-tiny-12f")
    with torch.no_grad():
        assert torch.equal(first.encode_video(random_video(1)), second.encode_video(random_video(1)))


def test_a_backbone_built_without_weights_on_purpose_does_not_warn_that_it_is_random(caplog):
    """open_clip warns on every build without `pretrained`; here it is asked for, or a file's weights follow."""
    with caplog.at_level("WARNING"):
        tempme.load_model("lora-tiny-12f")
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]
