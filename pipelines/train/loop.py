"""What every Ray Train worker runs: resume, train on its part of the shards, evaluate, checkpoint, log.

The step plan is fixed before the workers start (`TrainPlan`), so a worker restarted from a checkpoint at
step s skips the first s batches of the same deterministic epoch order and the run ends at the same step
count. Checkpoints are reported by rank 0 at the end of each epoch (scored by the evaluation split's
text-to-video R@1) and every `train.checkpoint_every` steps (unscored); Ray Train keeps the best and the
latest. After the last step the best checkpoint's adapter is evaluated on the test split.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pipelines.cluster.progress import Progress
from pipelines.evaluate.retrieval import (
    SplitEmbeddings,
    embed_videos,
    save_merge_pictures,
    save_recall_plot,
    score,
    split_batches,
)
from pipelines.shards.frames import normalise
from pipelines.train import data
from pipelines.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from pipelines.train.config import TrainJobConfig, config_from_dict
from pipelines.train.loss import all_reduce_gradients, global_contrastive_loss
from pipelines.train.optim import build_lr_scheduler, build_optimizer
from pipelines.train.plan import TrainPlan
from pipelines.train.reports import ADAPTER, FAULT_ENV, SCORE, STOPPED_TAG, UNSCORED, best_checkpoint
from pipelines.train.run_logger import RunLogger
from pipelines.train.runtime import amp_dtype, distributed, peak_memory_mb, training_model

log = logging.getLogger(__name__)

SHOWN_METRICS = 8   # metrics a progress line shows (all of them go to MLflow)
CORRUPT_ARTIFACT = "corrupt_samples.txt"   # the run's list of skipped samples: step, tar, bytes, why


def _brief(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in list(values.items())[:SHOWN_METRICS])


def evaluate_split(model, cfg: TrainJobConfig, splits: data.Splits, split: str, rank: int, world: int, amp):
    """Distributed evaluation: each worker embeds its part, then every worker ranks the whole split, the same
    EvalResult on all ranks: no rank waits inside a collective (under its timeout) while another scores. A
    corrupt sample is left out of the ranking and logged (a crash would restart the run into it again)."""
    batches = split_batches(splits[split], cfg.train.eval_batch_size, rank, world,
                            loader_workers=cfg.data.loader_workers,
                            pin_memory=model.device.type == "cuda", skip_corrupt=True)
    skipped: list[str] = []
    part = embed_videos(model, batches, amp, skipped)
    for record in skipped:
        log.warning("evaluation on %s left out a corrupt sample: %s", split, record)
    return score(SplitEmbeddings.concat(_all_gather(part)), split, model.device, cfg.train.v2t_protocol)


def _maybe_inject_fault(rank: int, step: int) -> None:
    """Test hook: kill this worker process once at the step named in $TEMPME_TEST_KILL_WORKER."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kill_rank, kill_step, marker = spec.split(":", 2)
    if int(kill_rank) == rank and int(kill_step) == step and not Path(marker).exists():
        Path(marker).write_text(f"killed rank {rank} after step {step}\n")
        os._exit(1)


class CorruptCount:
    """Corrupt samples met by all ranks: each is logged (rank 0 writes its tar and bytes to the run's log and
    its artifact `corrupt_samples.txt`, and counts it in the metric `corrupt_samples`), and once more than
    `bound` were met every rank stops at the same step and the run ends with a tag saying why, instead of failing
    and being restarted into them again. The records are the training state's (`TrainState.corrupt`), so a run
    restarted from a checkpoint goes on counting from what it had met."""

    def __init__(self, bound: int, logger, device: torch.device, logged: list[str]):
        self.bound, self.logger, self.device = bound, logger, device
        self.mine: list[str] = []
        self.logged = logged            # every record so far (kept in checkpoints), the run's `corrupt_samples.txt`
        self.over = False

    @property
    def total(self) -> int:
        """Corrupt samples met so far by all ranks, before a restart too."""
        return len(self.logged)

    def met(self, records) -> None:
        self.mine.extend(records)

    def check(self, step: int) -> bool:
        """Share what each rank met since the last check (a collective: every rank calls it at every step)."""
        flag = torch.tensor([len(self.mine)], dtype=torch.int64, device=self.device)
        if distributed():
            dist.all_reduce(flag)
        if not flag.item():
            return False
        records = [r for part in _all_gather(self.mine) for r in part]
        self.mine = []
        for record in records:
            self.logger.say(f"train: skipped a corrupt sample at step {step}: {record}")
        self.logged.extend(f"step {step}: {record}" for record in records)
        self.logger.text("\n".join(self.logged) + "\n", CORRUPT_ARTIFACT)
        self.logger.metrics({"corrupt_samples": self.total}, step=step)
        if self.total > self.bound:
            self.over = True
            why = (f"{self.total} corrupt samples met, more than data.max_corrupt={self.bound}: the shards need "
                   "`tempme preprocess` again (the log names each one's tar and bytes)")
            self.logger.say(f"train: stopping: {why}")
            self.logger.tags({STOPPED_TAG: why})
        return self.over


class _Throughput:
    """Videos per second over each logging window, and over the whole run without its first window."""

    def __init__(self):
        self.window_start, self.window_videos = time.perf_counter(), 0
        self.total_time, self.total_videos, self.windows = 0.0, 0, 0

    def add(self, videos: int) -> None:
        self.window_videos += videos

    def close_window(self) -> float:
        now = time.perf_counter()
        elapsed = now - self.window_start
        rate = self.window_videos / elapsed if elapsed > 0 else 0.0
        if self.windows:  # the first window pays for start-up (imports, allocator, data loader)
            self.total_time += elapsed
            self.total_videos += self.window_videos
        self.windows += 1
        self.window_start, self.window_videos = now, 0
        return rate

    @property
    def steady(self) -> float | None:
        return self.total_videos / self.total_time if self.total_time > 0 else None


def _report(state: TrainState, rank: int, write, score: float | None) -> None:
    """Report a checkpoint to Ray Train from every rank; rank 0 attaches the files written by `write(dir)`."""
    import ray.train

    metrics = {"step": state.step, "epoch": state.epoch, SCORE: UNSCORED if score is None else score}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="tempme-ckpt-") as tmp:
        directory = write(Path(tmp) / f"step_{state.step:08d}")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
                         checkpoint_dir_name=directory.name)


def _all_gather(obj) -> list:
    """Every rank's `obj` on every rank (a list in rank order)."""
    if not distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def train_worker(loop_config: dict) -> None:
    """The Ray Train worker function. `loop_config`: config (dict), plan (dict), run_id, tracking_uri."""
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(loop_config["config"])
    plan = TrainPlan(**loop_config["plan"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)     # object collectives (evaluation) on NCCL use the current device
    amp = amp_dtype(cfg.train.precision, device)

    model = training_model(cfg, device)
    with torch.no_grad():
        embed_dim = model.encode_text([""]).shape[1]
    params = list(model.trainable_parameters().values())
    optimizer = build_optimizer(params, cfg.optim)
    lr_scheduler = build_lr_scheduler(optimizer, plan.total_steps, cfg.optim.warmup_ratio)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    state = TrainState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory, model, optimizer, lr_scheduler, scaler)

    def write_checkpoint(directory: Path) -> Path:
        return save_checkpoint(directory, model, optimizer, lr_scheduler, scaler, state)

    splits = data.Splits(cfg)
    logger = RunLogger(rank == 0, loop_config["run_id"], loop_config["tracking_uri"],
                       cfg.tracking.system_metrics_interval_s if cfg.tracking.system_metrics else None)
    with logger:
        if checkpoint is not None:
            logger.tags({"resumed_from_step": str(state.step)})
        meter = _Throughput()
        epochs = math.ceil(plan.total_steps / plan.steps_per_epoch)
        steps = Progress("train", plan.total_steps, 0, logger.say, unit="steps", done=state.step, failures=False)
        loss_sum, loss_steps = torch.zeros((), device=device), 0
        corrupt = CorruptCount(cfg.data.max_corrupt, logger, device, state.corrupt)
        while state.step < plan.total_steps and not corrupt.over:
            state.epoch = state.step // plan.steps_per_epoch
            done_in_epoch = state.step - state.epoch * plan.steps_per_epoch
            batches = data.train_batches(cfg, plan, splits[cfg.data.train_split], rank, world, state.epoch,
                                         skip=done_in_epoch, pin_memory=device.type == "cuda")
            for batch in batches:
                corrupt.met(batch.pop("corrupt", ()))
                loss, global_batch = _train_step(model, batch, params, optimizer, lr_scheduler, scaler, cfg, amp,
                                                 embed_dim)
                state.step += 1
                meter.add(global_batch)
                loss_sum, loss_steps = loss_sum + loss.detach(), loss_steps + 1
                if state.step % cfg.train.log_every == 0 or state.step == plan.total_steps:
                    memory = torch.tensor(peak_memory_mb(device), device=device)
                    if distributed():
                        dist.all_reduce(memory, op=dist.ReduceOp.MAX)
                    values = {"train_loss": (loss_sum / loss_steps).item(),
                              "learning_rate": lr_scheduler.get_last_lr()[0],
                              "logit_scale": float(model.logit_scale),
                              "videos_per_s": meter.close_window(),
                              "peak_memory_mb": memory.item()}
                    logger.metrics({**values, "epoch": state.epoch}, step=state.step)
                    steps.update(state.step - steps.done, detail=f"epoch {state.epoch + 1}/{epochs}, {_brief(values)}")
                    loss_sum, loss_steps = torch.zeros((), device=device), 0
                if corrupt.check(state.step):
                    break
                epoch_end = state.step % plan.steps_per_epoch == 0 or state.step == plan.total_steps
                if epoch_end:
                    _end_of_epoch(model, cfg, splits, state, rank, world, amp, logger, write_checkpoint)
                elif cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
                    _report(state, rank, write_checkpoint, None)
                _maybe_inject_fault(rank, state.step)
                if epoch_end:
                    break

        if corrupt.over:
            return
        summary, result, split = _final_evaluation(model, cfg, splits, rank, world, amp)
        summary.update({f"peak_memory_mb_rank{r}": m for r, m in enumerate(_all_gather(peak_memory_mb(device)))})
        if meter.steady is not None:
            summary["steady_videos_per_s"] = meter.steady
        logger.metrics(summary, step=state.step)
        if rank == 0 and result is not None:   # after the last collective: the other ranks are not kept waiting
            _final_artifacts(model, cfg, splits, result, split, logger)


def _train_step(model, batch: dict, params, optimizer, lr_scheduler, scaler, cfg: TrainJobConfig, amp, embed_dim: int):
    """One optimiser step on the global batch; returns (loss, global batch size)."""
    device = model.device
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        if "video" in batch:
            frames = normalise(batch["video"].to(device, non_blocking=True), batch["mask"])
            video = model.encode_video(frames, batch["mask"])
            text = model.encode_text(batch["caption"])
        else:  # this worker's part of the epoch is used up (or its batch was all corrupt); the others go on
            video = text = torch.zeros(0, embed_dim, device=device)
    loss, global_batch = global_contrastive_loss(text.float(), video.float(), model.logit_scale)
    if global_batch and loss.requires_grad:
        (scaler.scale(loss) if scaler else loss).backward()
    all_reduce_gradients(params, cfg.optim.grad_average_over)
    if scaler:
        scaler.unscale_(optimizer)
    if cfg.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    lr_scheduler.step()
    return loss, global_batch


def _end_of_epoch(model, cfg: TrainJobConfig, splits, state: TrainState, rank, world, amp, logger, write_checkpoint):
    """Evaluate the selection split (when there is one) and report a scored checkpoint."""
    score_value = None
    if cfg.data.eval_split is not None:
        result = evaluate_split(model, cfg, splits, cfg.data.eval_split, rank, world, amp)
        score_value = result.metrics["t2v_r1"]
        logger.metrics({f"{cfg.data.eval_split}_{k}": v for k, v in result.metrics.items()}, step=state.step)
        logger.say(f"train: epoch {state.epoch + 1} on the {cfg.data.eval_split} split: {_brief(result.metrics)}")
    _report(state, rank, write_checkpoint, score_value)


def _final_evaluation(model, cfg: TrainJobConfig, splits, rank, world, amp):
    """Evaluate the best checkpoint's adapter on the test split: (summary metrics, result, split)."""
    import ray.train

    reported = ray.train.get_all_reported_checkpoints()
    if reported:
        best, _ = best_checkpoint([(r.checkpoint, r.metrics) for r in reported])
        with best.as_directory() as directory:
            model.load_adapter(Path(directory) / ADAPTER)
    split = cfg.data.test_split or cfg.data.eval_split
    if split is None:
        return {}, None, None
    result = evaluate_split(model, cfg, splits, split, rank, world, amp)
    return {f"final_{split}_{k}": v for k, v in result.metrics.items()}, result, split


def _final_artifacts(model, cfg: TrainJobConfig, splits, result, split: str, logger) -> None:
    """Rank 0's recall plot and merge pictures of the final evaluation."""
    with tempfile.TemporaryDirectory() as tmp:
        plot = save_recall_plot(result.ranks, Path(tmp) / "recall_at_k.png",
                                f"{cfg.model.preset}, {split} split ({result.videos} videos)")
        logger.artifact(plot, "plots")
        if cfg.tracking.visualize_videos:
            shown = split_batches(splits[cfg.data.eval_split or split], cfg.tracking.visualize_videos,
                                  loader_workers=0)
            save_merge_pictures(model, shown, cfg.tracking.visualize_videos, Path(tmp) / "merges")
            logger.artifact(Path(tmp) / "merges", "merge_visualization")
