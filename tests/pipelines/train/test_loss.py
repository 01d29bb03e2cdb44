"""The global-batch InfoNCE: two gloo processes must get exactly the one-process gradient."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipelines.train.loss import all_reduce_gradients, global_contrastive_loss, symmetric_infonce
from tests.fixtures.servers import free_port


def _batch(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)


class _Head(torch.nn.Module):
    """Stand-in encoders: one linear map each for text and video inputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.text = torch.nn.Linear(8, 4)
        self.video = torch.nn.Linear(8, 4)

    def forward(self, t, v):
        return (torch.nn.functional.normalize(self.text(t), dim=-1),
                torch.nn.functional.normalize(self.video(v), dim=-1))


# Local batch sizes of the two workers: equal, unequal, and one worker with nothing (the end of an epoch).
SPLITS = [[3, 3], [4, 1], [3, 0]]


def _worker(rank: int, world: int, port: int, out, average_over: int, clip: float):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for i, sizes in enumerate(SPLITS):
        t, v = _batch(sum(sizes))
        start = sum(sizes[:rank])
        head = _Head()
        ft, fv = head(t[start:start + sizes[rank]], v[start:start + sizes[rank]])
        loss, n = global_contrastive_loss(ft, fv, 10.0)
        loss.backward()
        params = list(head.parameters())
        all_reduce_gradients(params, average_over)
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        # as numpy: a tensor would travel as a shared-memory handle that dies with this process
        out.put(((i, rank), (loss.item(), n, [p.grad.numpy().copy() for p in params])))
    dist.destroy_process_group()



@pytest.mark.slow      # two worker processes joined by gloo
@pytest.mark.parametrize("average_over, clip", [(1, 0.0), (4, 0.05)], ids=["global-gradient", "authors-4-gpus"])
def test_two_workers_match_one_process(average_over, clip):
    """Plain: the gradient of the global loss. Authors': that gradient over 4 (DDP's average on their 4 GPUs),
    then clipped, as one process computes it, whatever the worker count."""
    # spawn, not fork: forking a process that already runs torch threads (and a Ray cluster) can deadlock
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_worker, args=(rank, 2, port, queue, average_over, clip), daemon=True)
             for rank in (0, 1)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=120) for _ in range(2 * len(SPLITS)))
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    for i, sizes in enumerate(SPLITS):
        t, v = _batch(sum(sizes))
        head = _Head()
        expected = symmetric_infonce(*head(t, v), 10.0)
        (expected / average_over).backward()
        if clip:
            assert torch.nn.utils.clip_grad_norm_(list(head.parameters()), clip) > clip   # clipping bites
        for rank in (0, 1):
            loss, n, grads = results[(i, rank)]
            assert n == sum(sizes)
            assert loss == pytest.approx(expected.item(), rel=1e-5)
            for got, p in zip(grads, head.parameters()):
                torch.testing.assert_close(torch.from_numpy(got), p.grad, rtol=1e-4, atol=1e-6)


def test_matching_pairs_give_a_lower_loss():
    t = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    assert symmetric_infonce(t, t, 20.0) < symmetric_infonce(t, t.roll(1, 0), 20.0)
    assert symmetric_infonce(t[:0], t[:0], 20.0).item() == 0.0
