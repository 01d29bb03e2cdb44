"""The inference form of the encoder: folded LoRA, one compiled graph, bf16; all agree with eager fp32."""
import pytest
import torch

import tempme
from tempme.attention import _size_bias, set_attention_kernel
from tempme.precision import cpu_has_native_bf16, inference_dtype

pytestmark = pytest.mark.usefixtures("fresh_compiler")   # each test compiles its own models



def _trained_like(preset="tempme-tiny-12f", seed=1):
    """A model whose LoRA and clip positional embeddings are non-zero, as after training."""
    model = tempme.load_model(preset)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def _mask(batch=2, frames=12):
    mask = torch.ones(batch, frames, dtype=torch.bool)
    mask[1, 7:] = False
    return mask


def test_folded_lora_is_the_same_function_and_unfolds_for_training(random_video):
    model = _trained_like()
    video, mask = random_video(), _mask()
    qkv = model.video.visual.transformer.resblocks[3].attn.qkv
    base = qkv.base_layer.weight.detach().clone()
    with torch.inference_mode():
        eager = model.encode_video(video, mask)
        text = model.encode_text(["a red square moving left"])
        model.fold_lora()
        assert model.lora_folded and not torch.equal(qkv.base_layer.weight, base)
        torch.testing.assert_close(model.encode_video(video, mask), eager, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.encode_text(["a red square moving left"]), text, atol=1e-5, rtol=1e-4)
    model.train()
    assert not model.lora_folded
    torch.testing.assert_close(qkv.base_layer.weight, base, atol=1e-6, rtol=0)


def test_loading_an_adapter_into_a_folded_model_refolds_the_new_values(random_video, tmp_path):
    trained = _trained_like(seed=2)
    adapter = trained.save_adapter(tmp_path / "adapter")
    video = random_video()
    model = _trained_like(seed=3).fold_lora()
    model.load_adapter(adapter)
    assert model.lora_folded
    with torch.inference_mode():
        torch.testing.assert_close(model.encode_video(video), trained.eval().encode_video(video),
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.slow      # torch.compile: a minute or two per preset on CPU
@pytest.mark.parametrize("preset", ["tempme-tiny-12f", "tome-tiny-12f"])
def test_encoder_compiles_into_one_graph_with_the_same_embeddings(preset, random_video):
    """fullgraph=True fails on any graph break: no host synchronisation, no data-dependent Python."""
    model = _trained_like(preset).eval().fold_lora()
    video, mask = random_video(), _mask()
    with torch.inference_mode():
        eager = model.encode_video(video, mask)
        compiled = torch.compile(model.video, fullgraph=True)(video, mask)
    assert torch.cosine_similarity(eager, compiled).min() >= 0.9999


def test_bf16_inference_form_stays_within_cosine_0999_of_fp32(random_video):
    model = _trained_like()
    video, mask = random_video(), _mask()
    captions = ["a red square moving left", "a blue bar moving up"]
    with torch.inference_mode():
        video_fp32, text_fp32 = model.encode_video(video, mask), model.encode_text(captions)
        model.for_inference("bf16")
        assert model.dtype == torch.bfloat16 and model.lora_folded and not model.training
        video_bf16, text_bf16 = model.encode_video(video, mask), model.encode_text(captions)
    assert video_bf16.dtype == text_bf16.dtype == torch.float32      # normalised in float32
    assert torch.cosine_similarity(video_fp32, video_bf16.float()).min() >= 0.999
    assert torch.cosine_similarity(text_fp32, text_bf16.float()).min() >= 0.999


@pytest.mark.parametrize("capability,expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                 ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_on_a_gpu_is_bf16_only_from_compute_capability_8(monkeypatch, capability, expected):
    """V100 (7.0) and T4 (7.5) emulate bf16, which `torch.cuda.is_bf16_supported()` counts: fp16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert inference_dtype("auto", "cuda") == expected


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively():
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert inference_dtype("auto", "cpu") == expected
    assert inference_dtype("fp32", "cpu") == torch.float32 and inference_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        inference_dtype("fp8", "cpu")


def test_flex_attention_kernel_is_refused_off_cuda(random_video):
    model = _trained_like()
    with pytest.raises(ValueError, match="unknown attention kernel 'xla'"):
        set_attention_kernel(model, "xla")
    set_attention_kernel(model, "flex")
    with torch.inference_mode(), pytest.raises(ValueError, match="flex attention kernel runs on CUDA only"):
        model.encode_video(random_video())


@pytest.mark.filterwarnings("ignore:.*flex_attention.*")
def test_flex_score_modification_adds_log_size_of_each_key():
    """The CUDA kernel's score modification, checked here with FlexAttention's eager reference code."""
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import flex_attention

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 37, 16, generator=generator) for _ in range(3))
    size = torch.randint(1, 5, (3, 37), generator=generator).float()
    flex = flex_attention(q, k, v, score_mod=_size_bias(size.log()))
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=size.log().view(3, 1, 1, 37))
    torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-5)
