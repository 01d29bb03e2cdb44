"""`tempme index`: what operators see of an index, and its maintenance commands."""
import json

import numpy as np

from jobs.cli import main
from pipelines.index import IndexStore, ModelRef, write_fragment
from pipelines.index.lease import WriterLease

MODEL = ModelRef("tiny", "4", "models:/tiny/4")


def make_index(location, batches=3, rows=5):
    with IndexStore(location).writer(MODEL, "ops") as w:
        for b in range(batches):
            ids = np.asarray([f"v{b}-{i}" for i in range(rows)], object)
            emb = np.eye(rows, 8, dtype=np.float32)
            out = write_fragment({"video_id": ids, "embedding": emb, "error": np.full(rows, "", object),
                                  "caption": ids, "thumb_shard": np.full(rows, "t.tar", object),
                                  "thumb_offset": np.zeros(rows, int), "thumb_size": np.ones(rows, int)},
                                 w.uri, MODEL.__dict__)
            w.commit([f for f in out["fragments"] if f])


def test_info_prints_versions_rows_model_and_search(tmp_path, capsys):
    make_index(tmp_path / "index")
    assert main(["index", "info", str(tmp_path / "index")]) == 0
    out = capsys.readouterr().out
    assert "15 videos, 3 fragments" in out and "model tiny v4 (models:/tiny/4)" in out
    latest = [line for line in out.splitlines() if line.strip().startswith("version")][-1]
    assert "15 rows  tiny v4: exact  <- readers" in latest
    assert main(["index", "info", str(tmp_path / "index"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 15 and info["versions"][-1]["version"] == info["version"]
    assert info["serving"] is None
    IndexStore(tmp_path / "index").pin_serving()          # as while a new model version comes in
    assert main(["index", "info", str(tmp_path / "index")]) == 0
    out = capsys.readouterr().out
    assert f"readers search version {info['version']} until" in out
    assert [line for line in out.splitlines() if "<- readers" in line][0].split()[1] == str(info["version"])


def test_compact_and_cleanup_wait_for_no_writer(tmp_path, capsys):

    make_index(tmp_path / "index")
    with WriterLease(IndexStore(tmp_path / "index"), "nightly"):
        for action in ("compact", "cleanup"):
            assert main(["index", action, str(tmp_path / "index")]) == 2
            assert "embedding run nightly" in capsys.readouterr().err


def test_compact_merges_fragments_and_cleanup_keeps_the_latest(tmp_path, capsys):
    make_index(tmp_path / "index")
    assert main(["index", "compact", str(tmp_path / "index")]) == 0
    assert json.loads(capsys.readouterr().out)["fragments_removed"] == 3
    assert main(["index", "cleanup", str(tmp_path / "index"), "--older-than", "0m"]) == 0
    assert json.loads(capsys.readouterr().out)["videos.lance"]["versions"] >= 3
    assert len(IndexStore(tmp_path / "index").open()) == 15


def test_no_index_an_old_index_or_a_bad_duration_are_one_message(tmp_path, capsys):
    assert main(["index", "info", str(tmp_path / "none")]) == 2
    assert "no embedding index here" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "CURRENT").write_text("manifests/1.json")
    assert main(["index", "info", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tempme index: ") and "re-embed into a new location" in err
    try:
        main(["index", "cleanup", str(tmp_path), "--older-than", "soon"])
    except SystemExit as e:
        assert e.code == 2
    assert "not a duration like 7d" in capsys.readouterr().err
