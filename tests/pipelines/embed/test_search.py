"""Text search over an index embedded by the Ray job, with the model trained in conftest."""
import json

import pytest
import torch

from jobs.cli import main
from pipelines.embed import ModelMismatch, TextSearch
from pipelines.index import IndexStore
from tests.fixtures.index_fixtures import shard_videos


@pytest.fixture(scope="module")
def index(trained_index):
    return trained_index[0]


def test_captions_find_their_video(index, synthetic_shards):
    items, video, mask = shard_videos(synthetic_shards)
    searcher = TextSearch(index)
    captions = [(c, it["id"]) for it in items for c in it["captions"]]
    results = searcher.search([c for c, _ in captions], k=5)
    top1 = sum(hits[0].video_id == vid for (_, vid), hits in zip(captions, results)) / len(captions)
    assert top1 >= 0.6, f"top-1 {top1:.2f} over {len(captions)} captions (chance is {1 / len(items):.2f})"
    assert all(len(hits) == 5 and hits[0].score >= hits[-1].score for hits in results)

    # The index answers exactly what the model says when run on the shard frames in this process.
    with torch.no_grad():
        scores = searcher.model.encode_text([c for c, _ in captions]) @ searcher.model.encode_video(video, mask).T
    position = {it["id"]: i for i, it in enumerate(items)}
    for row, hits in zip(scores, results):
        assert abs(hits[0].score - row.max().item()) < 1e-4          # the best score there is...
        assert row[position[hits[0].video_id]].item() > row.max().item() - 1e-4   # ...and the video that has it


def test_search_command_prints_json(index, capsys):
    assert main(["search", "a red square moving left", "--index", str(index), "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (result,) = out["results"]
    assert result["query"] == "a red square moving left" and [h["rank"] for h in result["hits"]] == [1, 2, 3]
    assert out["model"]["version"] == IndexStore(index).open().model.version
    assert out["index_version"] == IndexStore(index).dataset().version


def test_a_different_model_version_is_refused(index, untrained_adapter, capsys):
    with pytest.raises(ModelMismatch, match="version") as err:
        TextSearch(index, model_uri=str(untrained_adapter))
    assert str(index) in str(err.value)
    assert main(["search", "anything", "--index", str(index), "--model", str(untrained_adapter)]) == 2
    assert "re-embed" in capsys.readouterr().err


def test_a_missing_index_is_a_clear_error(tmp_path, capsys):
    assert main(["search", "anything", "--index", str(tmp_path / "nowhere")]) == 2
    assert "no embedding index" in capsys.readouterr().err
