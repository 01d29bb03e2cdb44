"""The encoder on a GPU: compiled and kernel variants agree with eager, training memory falls with merging."""
import pytest
import torch

import tempme
from tempme.attention import set_attention_kernel

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("fresh_compiler")]




def _video(batch, seed=0, device="cuda"):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 12, 3, 224, 224, generator=generator).to(device)


def _trained_like(preset: str) -> tempme.TempMeModel:
    """A preset on the GPU whose LoRA and clip positional embeddings are non-zero, as after training."""
    model = tempme.load_model(preset, device="cuda")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model


def test_compiled_folded_encoder_matches_eager_fp32():
    model = _trained_like("tempme-b16-12f")
    video = _video(4)
    with torch.inference_mode():
        eager = model.encode_video(video)
        model.fold_lora()
        folded = model.encode_video(video)
        model.video.compile(fullgraph=True)
        compiled = model.encode_video(video)
    assert torch.cosine_similarity(eager, folded).min() >= 0.9999
    assert torch.cosine_similarity(eager, compiled).min() >= 0.9999


def test_inference_form_bf16_stays_close_to_fp32():
    model = _trained_like("tempme-b16-12f")
    video = _video(4)
    with torch.inference_mode():
        fp32 = model.encode_video(video)
        model.for_inference("auto", compile=True)
        assert model.dtype == torch.bfloat16
        fast = model.encode_video(video).float()
    assert torch.cosine_similarity(fp32, fast).min() >= 0.999


def test_flex_attention_kernel_matches_sdpa():
    model = _trained_like("tempme-b16-12f")
    video = _video(4)
    with torch.inference_mode():
        sdpa = model.encode_video(video)
        set_attention_kernel(model, "flex")
        model.video.compile(fullgraph=True)
        flex = model.encode_video(video)
    assert torch.cosine_similarity(sdpa, flex).min() >= 0.9999


def _training_peak_mb(preset: str, batch: int) -> float:
    model = _trained_like(preset).train()
    video = _video(batch)
    captions = [f"caption {i}" for i in range(batch)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        v = model.encode_video(video)
        t = model.encode_text(captions)
    loss = (model.similarity(t.float(), v.float()).diagonal()).mean()
    loss.backward()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    del model, video, v, t, loss
    torch.cuda.empty_cache()
    return peak


def test_training_tempme_needs_less_gpu_memory_than_lora():
    tempme_mb = _training_peak_mb("tempme-b16-12f", 16)
    lora_mb = _training_peak_mb("lora-b16-12f", 16)
    print(f"training peak memory, batch 16, bf16 autocast: tempme {tempme_mb:.0f} MB, lora {lora_mb:.0f} MB "
          f"({tempme_mb / lora_mb:.2f}x)")
    assert tempme_mb < 0.9 * lora_mb
