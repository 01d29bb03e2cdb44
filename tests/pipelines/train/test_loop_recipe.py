"""The paper's recipe pieces one at a time: warm-up + cosine learning rate, gradient clipping, mixed precision.

The steps run `loop._train_step`, the very function every Ray Train worker calls, on the tiny model in this
process (no process group: a single worker skips the collectives).
"""
import math

import pytest
import torch

from pipelines.train.config import TINY_CONFIG, load_config
from pipelines.train.loop import _train_step
from pipelines.train.optim import build_lr_scheduler, build_optimizer
from pipelines.train.runtime import amp_dtype, training_model

TINY = TINY_CONFIG
CAPTIONS = ["a red square moving left", "a blue circle growing"]


def _lr_by_step(total_steps: int, warmup_ratio: float, lr: float) -> list[float]:
    """The learning rate each optimiser step of a run uses (index = step), and the one after the last step."""
    param = torch.nn.Parameter(torch.zeros(1))
    cfg = load_config(TINY, [f"optim.lr={lr}"]).optim
    optimizer = build_optimizer([param], cfg)
    lr_scheduler = build_lr_scheduler(optimizer, total_steps, warmup_ratio)
    lrs = []
    for _ in range(total_steps):
        lrs.append(lr_scheduler.get_last_lr()[0])
        optimizer.step()
        lr_scheduler.step()
    return lrs + [lr_scheduler.get_last_lr()[0]]


def test_linear_warmup_then_cosine_to_zero():
    lr, total = 6e-4, 100                         # warm-up: int(100 * 0.1) = 10 steps
    lrs = _lr_by_step(total, 0.1, lr)
    assert lrs[0] == pytest.approx(lr / 10)       # the first step already moves, at a tenth of the rate
    assert lrs[9] == pytest.approx(lr)            # the last warm-up step reaches the full rate ...
    assert lrs[10] == pytest.approx(lr)           # ... and the cosine starts from it
    assert lrs[55] == pytest.approx(lr / 2)       # half-way through the cosine: half the rate
    assert lrs[99] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))           # rises through the warm-up
    assert all(a > b for a, b in zip(lrs[10:100], lrs[11:101]))      # then only falls


def test_no_warmup_starts_at_the_full_rate():
    lrs = _lr_by_step(20, 0.0, 1e-3)
    assert lrs[0] == pytest.approx(1e-3) and lrs[10] == pytest.approx(5e-4) and lrs[20] == pytest.approx(0.0)


@pytest.mark.parametrize("precision, device, expected", [
    ("auto", "cpu", None),
    ("fp32", "cuda", None),
    ("fp32", "cpu", None),
    ("bf16", "cpu", torch.bfloat16),
    ("fp16", "cuda", torch.float16),
])
def test_autocast_dtype(precision, device, expected):
    assert amp_dtype(precision, torch.device(device)) is expected


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_auto_autocast_on_a_gpu_is_bf16_only_where_it_is_native(monkeypatch, capability, expected):
    """A T4 (7.5) emulates bf16, which `torch.cuda.is_bf16_supported()` counts: fp16 (with a scaler) there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert amp_dtype("auto", torch.device("cuda")) is expected


def _step_setup(*overrides: str, amp=None):
    """The tiny model, optimiser and lr_scheduler a worker builds, and a batch of two random videos."""
    cfg = load_config(TINY, ["data.shards=unused", *overrides])
    model = training_model(cfg, torch.device("cpu"))
    params = list(model.trainable_parameters().values())
    optimizer = build_optimizer(params, cfg.optim)
    lr_scheduler = build_lr_scheduler(optimizer, total_steps=10, warmup_ratio=cfg.optim.warmup_ratio)
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.randn(2, 12, 3, 224, 224, generator=g), "mask": torch.ones(2, 12, dtype=torch.bool),
             "caption": CAPTIONS}

    def step():
        return _train_step(model, batch, params, optimizer, lr_scheduler, None, cfg, amp, embed_dim=64)
    return model, params, step


def _grad_norm(params) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])).item()


def test_gradient_clipping_bounds_the_global_norm():
    clip = 1e-3
    _, params, step = _step_setup("optim.grad_clip=0")
    step()
    unclipped = _grad_norm(params)
    assert unclipped > 10 * clip                  # the limit below really has something to cut

    _, params, step = _step_setup(f"optim.grad_clip={clip}")
    loss, pairs = step()
    assert pairs == 2 and torch.isfinite(loss)
    # The gradients the optimiser stepped with (kept after the step) have the global norm of the limit.
    assert _grad_norm(params) == pytest.approx(clip, rel=1e-4)


def test_bf16_autocast_step_on_cpu_trains_lora():
    model, params, step = _step_setup("train.precision=bf16", amp=torch.bfloat16)
    lora = {name: p.detach().clone() for name, p in model.trainable_parameters().items() if "lora_" in name}
    assert lora

    loss, pairs = step()

    assert loss.dtype == torch.float32 and torch.isfinite(loss) and pairs == 2
    changed = [name for name, before in lora.items()
               if not torch.equal(model.trainable_parameters()[name].detach(), before)]
    assert changed, "no LoRA parameter moved"
    assert all(p.dtype == torch.float32 for p in params)     # autocast computes in bf16; weights stay fp32
