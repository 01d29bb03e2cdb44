"""What a training worker leaves for the driver to read back: the names of its checkpoint's parts, the score
Ray Train keeps the best checkpoint by, the metrics logged once at the end and the tag a stopped run carries.

Kept apart from the training loop, and free of torch and the model, so that the driver, which runs on the
head node, imports neither.
"""
from __future__ import annotations

ADAPTER = "adapter"         # a checkpoint's folder holding the LoRA adapter
SCORE = "selection_score"   # the checkpoint metric Ray Train keeps the best of
UNSCORED = -1.0             # score of mid-epoch checkpoints: never the best, kept only as the latest
SUMMARY_PREFIXES = ("final_", "steady_videos_per_s", "peak_memory_mb_rank")  # metrics logged once, at the end
STOPPED_TAG = "stopped_because"   # set on a run that stopped itself (too many corrupt samples), saying why
FAULT_ENV = "TEMPME_TEST_KILL_WORKER"   # tests only: "rank:step:marker_file" kills that worker once


def best_checkpoint(candidates):
    """The (checkpoint, metrics) pair with the best selection score, the latest among equals (and when
    nothing was scored, the latest)."""
    return max(candidates, key=lambda cm: (cm[1].get(SCORE, UNSCORED), cm[1].get("step", 0)))
