"""bf16, the default inference precision where the CPU computes it natively, changes no retrieval result."""
import dataclasses

import numpy as np

from pipelines.evaluate.options import EvaluateOptions
from pipelines.evaluate.retrieval import embed_videos, evaluate_model, score, split_batches
from pipelines.model.registry import open_model
from pipelines.shards.reader import SampleTable


def _embed(adapter, shards, precision):
    model, _ = open_model(str(adapter))
    model.for_inference(precision)
    return embed_videos(model, split_batches(SampleTable.build([str(shards)], "test"), batch_size=4, loader_workers=0))


def test_bf16_embeddings_stay_close_to_fp32_and_keep_every_rank(trained_adapter, synthetic_shards):
    fp32, bf16 = _embed(trained_adapter, synthetic_shards, "fp32"), _embed(trained_adapter, synthetic_shards, "bf16")
    assert fp32.video_ids == bf16.video_ids and fp32.text_video_ids == bf16.text_video_ids
    assert (fp32.videos * bf16.videos).sum(1).min() >= 0.999
    assert (fp32.texts * bf16.texts).sum(1).min() >= 0.999
    exact, fast = score(fp32), score(bf16)
    assert np.array_equal(exact.ranks.t2v, fast.ranks.t2v) and np.array_equal(exact.ranks.v2t, fast.ranks.v2t)
    assert exact.metrics == fast.metrics


def test_evaluate_runs_in_the_asked_precision(trained_adapter, synthetic_shards):
    options = EvaluateOptions(model=str(trained_adapter), shards=str(synthetic_shards), split="test")
    auto, _ = evaluate_model(options)
    exact, _ = evaluate_model(dataclasses.replace(options, precision="fp32"))
    assert auto.metrics == exact.metrics
