"""Reading inputs: the MSR-VTT layout, manifests in three formats, and one failure per bad row."""
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.preprocess.inputs import collect_inputs
from pipelines.preprocess.sources import InputError, read_folder, read_manifest, read_msrvtt


def checked(batches):
    """(the inputs that count, as objects; the failures)."""
    inputs = collect_inputs(batches)
    return inputs.videos(np.flatnonzero(inputs.counted)), inputs.failures


def write_msrvtt(root):
    sentences = [{"video_id": "video1", "caption": "second", "sen_id": 5},
                 {"video_id": "video1", "caption": "first", "sen_id": 2},
                 {"video_id": "video0", "caption": "only", "sen_id": 0},
                 {"video_id": "video7010", "caption": "not the test caption", "sen_id": 9}]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr7010,video7010,a man is cooking\n")


def test_msrvtt_layout_gives_9k_train_and_jsfusion_test(tmp_path):
    write_msrvtt(tmp_path)
    inputs, failures = checked([read_msrvtt(str(tmp_path), str(tmp_path / "videos"))])
    by_id = {v.id: v for v in inputs}
    assert by_id["video1"].captions == ("first", "second")          # sen_id order
    assert by_id["video0"].split == "train" and by_id["video7010"].split == "test"
    assert by_id["video7010"].captions == ("a man is cooking",)     # from the JSFUSION csv only
    assert by_id["video0"].uri == str(tmp_path / "videos" / "video0.mp4")
    assert [(f.id, f.stage) for f in failures] == [("video2", "source")]   # no sentences at all
    assert "no captions" in failures[0].error


def test_msrvtt_missing_file_names_it(tmp_path):
    write_msrvtt(tmp_path)
    (tmp_path / "MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(InputError, match="MSRVTT_JSFUSION_test.csv"):
        read_msrvtt(str(tmp_path), str(tmp_path))


ROWS = [{"video": "a.mp4", "id": "a", "captions": ["a cat", "a dog"], "split": "train"},
        {"video": "sub/b c.mp4", "id": "b", "captions": ["one"], "split": "test"},
        {"video": "/abs/c.mp4", "id": "c", "captions": ["x"], "split": "val"},
        {"video": "s3://bucket/d.mp4", "id": "d", "captions": ["y"], "split": "train"}]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_manifest_formats_read_alike(tmp_path, kind):
    path = tmp_path / f"m.{kind}"
    if kind == "csv":
        lines = ["video,id,captions,split"] + [
            f'"{r["video"]}",{r["id"]},"{json.dumps(r["captions"]).replace(chr(34), chr(34) * 2)}",{r["split"]}'
            for r in ROWS]
        path.write_text("\n".join(lines) + "\n")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    inputs, failures = checked(read_manifest(str(path)))
    assert failures == []
    assert [(v.id, v.captions, v.split) for v in inputs] == [(r["id"], tuple(r["captions"]), r["split"]) for r in ROWS]
    assert [v.uri for v in inputs] == [str(tmp_path / "a.mp4"), str(tmp_path / "sub" / "b c.mp4"),
                                       "/abs/c.mp4", "s3://bucket/d.mp4"]


def test_each_bad_row_is_one_failure_and_good_rows_stay(tmp_path):
    rows = [{"video": "ok.mp4", "id": "ok", "captions": ["fine"], "split": "train"},
            {"video": "e.mp4", "id": "empty", "captions": ["fine", "  "], "split": "train"},
            {"video": "n.mp4", "id": "number", "captions": ["fine", 42], "split": "train"},
            {"video": "l.mp4", "id": "nolist", "captions": None, "split": "train"},
            {"video": "z.mp4", "id": "none", "captions": [], "split": "train"},
            {"video": "s.mp4", "id": "split", "captions": ["x"], "split": "holdout"},
            {"video": "d.mp4", "id": "ok", "captions": ["again"], "split": "train"},
            {"video": "", "id": "novideo", "captions": ["x"], "split": "train"},
            {"video": "i.mp4", "id": 3.5, "captions": ["x"], "split": "train"}]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    inputs, failures = checked(read_manifest(str(path)))
    assert [v.id for v in inputs] == ["ok"] and inputs[0].captions == ("fine",)
    reasons = [f.error for f in failures]
    assert len(failures) == len(rows)  # 8 bad rows + the line that is not JSON
    for expected in ["caption 2 of 2 is empty", "caption 2 of 2 is not text (int 42)",
                     "captions are not text", "no captions", "unknown split 'holdout'",
                     "duplicate id 'ok' (first given at m.jsonl line 1)", "video path missing",
                     "id missing", "not JSON"]:
        assert sum(expected in r for r in reasons) == 1, (expected, reasons)
    assert all(f.stage == "source" for f in failures)


def test_manifest_without_a_video_column_is_an_input_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("file,id,split\nx.mp4,a,train\n")
    with pytest.raises(InputError, match="no video column"):
        read_manifest(str(path))


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_a_manifest_of_videos_alone_is_a_corpus_named_by_its_paths(tmp_path, kind):
    """No id, caption or split: ids are the paths as given (stable across runs), the split is corpus, and a
    corpus video needs no caption; a train video still does, and says so."""
    rows = [{"video": "talks/a.mp4"}, {"video": "b.mkv"}]
    path = tmp_path / f"m.{kind}"
    if kind == "csv":
        path.write_text("video\n" + "".join(r["video"] + "\n" for r in rows))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    inputs, failures = checked(read_manifest(str(path)))
    assert not failures
    assert [(v.id, v.split, v.captions) for v in inputs] == [("talks/a.mp4", "corpus", ()), ("b.mkv", "corpus", ())]
    assert inputs[0].uri == str(tmp_path / "talks" / "a.mp4")


def test_captions_are_optional_in_the_corpus_split_only(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("video,id,captions,split\na.mp4,a,,\nb.mp4,,a dog runs,corpus\nc.mp4,c,,train\n")
    inputs, failures = checked(read_manifest(str(path)))
    assert [(v.id, v.split, v.captions) for v in inputs] == [("a", "corpus", ()), ("b.mp4", "corpus", ("a dog runs",))]
    assert [f.id for f in failures] == ["c"] and "no captions (a train video needs one" in failures[0].error


def test_a_folder_of_videos_is_walked_for_video_files(tmp_path):
    for name in ("a.mp4", "talks/2024/b.MOV", "talks/c.webm", "notes.txt", ".hidden.mp4", "talks/cover.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    inputs, failures = checked(read_folder(str(tmp_path), batch_rows=2))
    assert not failures
    assert sorted(v.id for v in inputs) == ["a.mp4", "talks/2024/b.MOV", "talks/c.webm"]
    assert {v.split for v in inputs} == {"corpus"}
    assert {v.uri for v in inputs} == {str(tmp_path / v.id) for v in inputs}


MIXED = [{"video": "a.mp4", "id": "a", "captions": ["one", " two "], "split": "train"},
         {"video": "b.mp4", "id": " ", "captions": ["x"], "split": "train"},
         {"video": "c.mp4", "id": "c", "captions": ["x", None], "split": "train"},
         {"video": "d.mp4", "id": "d", "captions": [], "split": "val"},
         {"video": "", "id": "e", "captions": ["x"], "split": "test"},
         {"video": "f.mp4", "id": "f", "captions": ["x"], "split": "holdout"},
         {"video": "g.mp4", "id": "a", "captions": ["again"], "split": "train"},
         {"video": "h.mp4", "id": "h", "captions": None, "split": "test"},
         {"video": "i.mp4", "id": "i", "captions": ["fine"], "split": "test"}]


def test_columns_checked_in_batches_agree_with_rows_checked_one_by_one(tmp_path):
    """Parquet batches are checked as columns, JSON lines row by row: the same inputs, the same failures,
    also when an id given twice lies in another batch."""
    pq.write_table(pa.Table.from_pylist(MIXED), tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MIXED))
    found = {}
    for kind in ("parquet", "jsonl"):
        inputs, failures = checked(read_manifest(str(tmp_path / f"m.{kind}"), batch_rows=4))
        found[kind] = ([(v.id, v.uri, v.captions, v.split) for v in inputs],
                       sorted((f.id, re.sub(r"at m\.\w+ (row|line)", "at", f.error.split(": ", 1)[1]))
                              for f in failures))
    assert found["parquet"] == found["jsonl"]
    inputs, failures = found["parquet"]
    assert inputs == [("a", str(tmp_path / "a.mp4"), ("one", "two"), "train"),
                      ("b.mp4", str(tmp_path / "b.mp4"), ("x",), "train"),     # a blank id is the video's path
                      ("i", str(tmp_path / "i.mp4"), ("fine",), "test")]
    assert len(failures) == len(MIXED) - 3
    assert ("a", "duplicate id 'a' (first given at 1)") in failures


def test_csv_captions_that_are_json_lists_keep_their_place(tmp_path):
    """A CSV caption that looks like a JSON list takes the row-by-row path; the batch keeps input order."""
    path = tmp_path / "m.csv"
    path.write_text('video,id,captions,split\nx.mp4,x,plain,train\ny.mp4,y,"[""p"", ""q""]",train\n'
                    "z.mp4,z,last,train\n7.mp4,7,\"[not json\",test\n")
    inputs, failures = checked(read_manifest(str(path), batch_rows=3))
    assert [(v.id, v.captions) for v in inputs] == [("x", ("plain",)), ("y", ("p", "q")), ("z", ("last",)),
                                                    ("7", ("[not json",))]
    assert failures == []
