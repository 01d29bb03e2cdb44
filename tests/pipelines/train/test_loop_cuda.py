"""One bf16 training step of the paper's ViT-B/16 TempMe in an NCCL process group on one GPU."""

import pytest
import torch
import torch.distributed as dist

from pipelines.train.config import TrainJobConfig
from pipelines.train.loop import _train_step
from pipelines.train.optim import build_lr_scheduler, build_optimizer
from pipelines.train.runtime import amp_dtype, training_model
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.gpu



@pytest.fixture
def nccl_group():
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_bf16_training_step_of_b16_on_nccl(nccl_group):
    cfg = TrainJobConfig()
    cfg.model.preset = "tempme-b16-12f"
    device = torch.device("cuda", 0)
    amp = amp_dtype(cfg.train.precision, device)
    assert amp == torch.bfloat16                       # `auto` trains in bf16 on a GPU
    model = training_model(cfg, device)
    params = list(model.trainable_parameters().values())
    before = {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
    frozen = model.video.visual.transformer.resblocks[0].mlp.c_fc.weight.detach().clone()
    optimizer = build_optimizer(params, cfg.optim)
    lr_scheduler = build_lr_scheduler(optimizer, total_steps=10, warmup_ratio=0.0)
    generator = torch.Generator().manual_seed(0)
    batch = {"video": torch.randn(8, 12, 3, 224, 224, generator=generator).pin_memory(),
             "mask": torch.ones(8, 12, dtype=torch.bool), "caption": [f"video number {i}" for i in range(8)]}

    loss, global_batch = _train_step(model, batch, params, optimizer, lr_scheduler, None, cfg, amp, embed_dim=512)

    assert global_batch == 8 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in params)            # master weights stay fp32
    changed = [n for n, p in model.trainable_parameters().items() if not torch.equal(p, before[n])]
    assert any("lora_B" in n for n in changed) and any("clip_pos" in n for n in changed)
    assert torch.equal(model.video.visual.transformer.resblocks[0].mlp.c_fc.weight, frozen)
    summed = loss.detach().clone()
    dist.all_reduce(summed)                              # the NCCL group carries collectives on this GPU
    assert torch.allclose(summed, loss.detach())
