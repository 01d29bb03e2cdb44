"""The demo's pipeline, end to end on a smaller corpus: the same code path `make demo` runs, fewer steps.

It is also the learning check: 2 Ray Train workers train the tiny preset from random weights on the synthetic
corpus, and the held-out text-to-video R@1 must reach 1.5 times chance and R@5 1.4 times chance. On the 8 test
videos (chance R@1 12.5, R@5 62.5) these settings gave R@1 37.5, 50.0 and 50.0 in three learning checks
(train.seed 0, 1, 2, no model selection) and 25.0 in the demo itself, and R@5 100 every time.
"""
import json

import mlflow
import pytest

from pipelines.demo.end_to_end import choose_weights, run_demo
from pipelines.demo.options import DemoOptions
from pipelines.index import IndexStore

QUERIES = ("a red square moving left", "a blue bar moving up")


def test_demo_runs_every_stage_and_says_where_things_are(ray_cluster, tmp_path):
    lines = []
    result = run_demo(DemoOptions(workdir=str(tmp_path / "demo"), videos=32, epochs=4, pretrained="none",
                                  queries=QUERIES, top_k=3), say=lines.append)
    text = "\n".join(lines)

    summary = json.loads((result.shards / "_summary.json").read_text())
    assert sum(s["samples"] for s in summary["splits"].values()) == 32
    assert result.embedded == 32
    index = IndexStore(result.index).open()
    assert len(index) == 32 and index.model.version == result.version
    assert result.model_uri == "models:/tempme-demo@champion"
    client = mlflow.MlflowClient(result.tracking_uri)
    assert str(client.get_model_version_by_alias("tempme-demo", "champion").version) == result.version
    assert set(result.hits) == set(QUERIES)
    for hits in result.hits.values():
        scores = [score for _, score, _ in hits]
        assert len(hits) == 3 and scores == sorted(scores, reverse=True)
        assert all(caption for _, _, caption in hits)        # every hit is a video of the corpus
    assert result.chance_r1 == pytest.approx(100 / 8) and f"chance R@1 {result.chance_r1:.1f}" in text
    assert result.test_metrics["t2v_r1"] >= 1.5 * result.chance_r1        # it learns
    assert result.test_metrics["t2v_r5"] >= 1.4 * 5 * result.chance_r1
    assert "RANDOM" in text                                   # says plainly that the weights are random
    for where in (str(result.shards), str(result.index), "mlflow ui --backend-store-uri " + result.tracking_uri):
        assert where in text


def test_weights_choice(tmp_path, monkeypatch):
    said = []
    assert choose_weights("none", said.append) is None
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        choose_weights(str(tmp_path / "nope.pt"), said.append)
    checkpoint = tmp_path / "ViT-B-32.pt"
    checkpoint.write_bytes(b"weights")
    assert choose_weights(str(checkpoint), said.append) == str(checkpoint)
    monkeypatch.setenv("TEMPME_PRETRAINED", str(checkpoint))
    assert choose_weights("auto", said.append) == str(checkpoint)
    assert not said
