"""`tempme evaluate` on real shards: every test video and caption ranked, with an adapter directory as the model."""
import json

import numpy as np
import pytest

from jobs.cli import main
from pipelines.evaluate.retrieval import SplitEmbeddings, embed_videos, score, split_batches
from pipelines.model.registry import build_model
from pipelines.shards.reader import SampleTable


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    return build_model("tempme-tiny-12f").save_adapter(tmp_path_factory.mktemp("evaluate") / "tiny")


def test_evaluate_command_reports_all_metrics(adapter_dir, synthetic_shards, tmp_path, capsys):
    plot = tmp_path / "recall.png"
    argv = ["evaluate", "--model", str(adapter_dir), "--shards", str(synthetic_shards), "--split", "test",
            "--batch-size", "3", "--plot", str(plot), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["videos"], report["texts"]) == (4, 12)          # 4 test videos with 3 captions each
    assert report["v2t_protocol"] == "per_video"                   # the authors' protocol by default
    assert report["model"]["name"] == "tiny" and len(report["model"]["version"]) == 12
    metrics = report["metrics"]
    for d in ("t2v", "v2t"):
        assert 0 <= metrics[f"{d}_r1"] <= metrics[f"{d}_r5"] <= metrics[f"{d}_r10"] <= 100
        assert 1 <= metrics[f"{d}_medr"] <= 4      # 4 candidate videos / captions of 3 other videos + 1
    assert plot.stat().st_size > 1000


def test_split_parts_together_equal_the_whole(adapter_dir, synthetic_shards):
    """What two workers embed, concatenated, scores exactly like one process over the split."""
    model = build_model("tempme-tiny-12f", adapter=adapter_dir)
    table = SampleTable.build([str(synthetic_shards)], "test")
    whole = embed_videos(model, split_batches(table, 4, loader_workers=0))
    parts = [embed_videos(model, split_batches(table, 4, rank, 2, loader_workers=1)) for rank in (0, 1)]
    joined = SplitEmbeddings.concat(parts)
    assert joined.video_ids == whole.video_ids and len(set(whole.video_ids)) == 4
    assert score(joined).metrics == pytest.approx(score(whole).metrics)


def test_evaluate_command_names_a_missing_model(synthetic_shards, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--shards", str(synthetic_shards)]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_command_asks_the_cluster_for_a_gpu(adapter_dir, synthetic_shards, ray_cluster, capsys):
    """The evaluation is Ray work: on this fixed CPU-only cluster a GPU cannot come, and it says so."""
    argv = ["evaluate", "--model", str(adapter_dir), "--shards", str(synthetic_shards), "--device", "gpu"]
    assert main(argv) == 2
    assert "no GPUs" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(adapter_dir), "--shards", str(synthetic_shards), "--split", "val"]) == 2
    assert "'val'" in capsys.readouterr().err


def test_nan_embeddings_are_an_error_that_names_the_split_and_videos():
    videos = np.eye(3, dtype=np.float32)
    videos[2, 0] = np.nan
    broken = SplitEmbeddings(["a", "b", "c"], videos, ["a", "b", "c"], np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"the val split: NaN or infinite embeddings for 1 videos .*\(c\)"):
        score(broken, "val")
