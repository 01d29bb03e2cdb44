"""The embedding job on a real local Ray cluster and real shards: incremental, versioned, kill-safe."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import mlflow
import numpy as np
import pyarrow as pa
import pytest

from jobs.cli import main
from pipelines.embed import EmbedOptions, TextSearch, embed_corpus
from pipelines.index import IndexStore
from pipelines.index.rows import model_rows
from pipelines.model.registry import resolve_model
from pipelines.preprocess.plan import record_removed
from pipelines.shards.format import REMOVED_SCHEMA, read_removed, sample_table
from pipelines.storage.location import Location

VIDEOS = 16          # the synthetic_shards fixture


def tracking(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def embed(shards, adapter, out, tmp_path, workers, **kw):
    return embed_corpus(EmbedOptions(shards=str(shards), model=str(adapter), out=str(out), workers=workers,
                                     batch_size=4, tracking_uri=tracking(tmp_path), **kw))


def index_rows(out):
    return IndexStore(out).dataset().to_table().to_pylist()


def test_embed_then_rerun_embeds_nothing_new(trained_index, synthetic_shards, trained_adapter, tmp_path):
    index, first, uri = trained_index
    assert (first.videos, first.already_done, first.embedded, first.failed) == (VIDEOS, 0, VIDEOS, 0)
    model, _ = resolve_model(str(trained_adapter))
    rows = index_rows(index)
    assert len(rows) == VIDEOS and len({r["video_id"] for r in rows}) == VIDEOS
    assert {(r["model_name"], r["model_version"]) for r in rows} == {(model.name, model.version)}
    assert all(len(r["embedding"]) == 64 and abs(np.linalg.norm(r["embedding"]) - 1) < 1e-4 for r in rows)
    assert all(r["embedded_at"] is not None for r in rows)
    assert all(r["caption"] and r["thumb_shard"].endswith(".tar") and r["thumb_size"] > 0 for r in rows)

    run = mlflow.MlflowClient(uri).get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["embedded"] == VIDEOS and run.data.metrics["videos_per_s"] > 0
    assert run.data.params["model_version"] == model.version
    assert run.data.tags["index_location"] == str(index)

    out = tmp_path / "index"
    shutil.copytree(index, out)
    second = embed_corpus(EmbedOptions(shards=str(synthetic_shards), model=str(trained_adapter), out=str(out),
                                       workers=1, batch_size=4, tracking_uri=uri))
    assert (second.already_done, second.embedded) == (VIDEOS, 0)
    assert second.index["version"] == first.index["version"]      # nothing changed: no commit at all
    # the first run had finished, so the second is a run of its own (only an unfinished run is continued)
    assert second.mlflow_run_id != first.mlflow_run_id
    assert mlflow.MlflowClient(uri).get_run(second.mlflow_run_id).data.metrics["already_done"] == VIDEOS


def test_new_model_version_reembeds_everything_while_readers_see_a_complete_index(
        trained_index, synthetic_shards, trained_adapter, untrained_adapter, tmp_path):
    out = tmp_path / "index"
    shutil.copytree(trained_index[0], out)
    old, _ = resolve_model(str(trained_adapter))
    new, _ = resolve_model(str(untrained_adapter))
    assert (old.name, old.version) != (new.name, new.version)

    seen, problems, unpublished_while_old = [], [], []
    done = threading.Event()

    def read():
        while not done.is_set():
            try:
                index = IndexStore(out).open()
                ids = index.video_ids()
                if len(ids) != VIDEOS or len(set(ids)) != VIDEOS:
                    problems.append(f"{len(ids)} ids in version {index.version}")
                seen.append(index.model.version)
                if index.model == old and IndexStore(out).dataset().count_rows(model_rows(new)):
                    unpublished_while_old.append(True)       # the new rows are in the table ...
                    if index.ds.count_rows(model_rows(new)) or index.filter is not None:
                        problems.append("a reader's version holds rows of the coming model")   # ... not in its version
            except Exception as e:
                problems.append(repr(e))
            time.sleep(0.01)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        report = embed(synthetic_shards, untrained_adapter, out, tmp_path, workers=1, part_rows=2)
    finally:
        done.set()
        reader.join()
    assert (report.already_done, report.embedded) == (0, VIDEOS)
    assert not problems, problems[:3]
    assert unpublished_while_old, "the reader never ran while the new rows were being written"
    assert set(seen) <= {old.version, new.version} and seen[0] == old.version
    rows = index_rows(out)
    assert len(rows) == VIDEOS and {r["model_version"] for r in rows} == {new.version}


def corrupt_one_frame(shards, dst) -> str:
    """Copy the shards and overwrite one JPEG of one sample in place; returns that video's id."""
    shutil.copytree(shards, dst)
    sample = sample_table(Location.of(str(dst))).to_table(filter="split = 'train'").to_pylist()[1]
    with open(dst / sample["shard"], "r+b") as f:
        f.seek(sample["thumb_offset"])                   # the first frame's JPEG
        f.write(b"\x00" * sample["thumb_size"])
    return sample["id"]


def test_corrupt_samples_are_recorded_and_skipped(ray_cluster, synthetic_shards, trained_adapter, tmp_path):
    bad = corrupt_one_frame(synthetic_shards, tmp_path / "shards")
    out = tmp_path / "index"
    report = embed(tmp_path / "shards", trained_adapter, out, tmp_path, workers=1)
    assert (report.embedded, report.failed) == (VIDEOS - 1, 1)
    assert bad not in IndexStore(out).open().video_ids()
    (failure,) = IndexStore(out).failures().to_pylist()
    assert failure["video_id"] == bad and failure["source"].endswith(".tar") and "Error" in failure["error"]
    model, _ = resolve_model(str(trained_adapter))
    with IndexStore(out).writer(model, "next") as writer:   # the failed video stays to do: the next run retries it
        done = [i for b in writer.done_ids() for i in b.to_pylist()]
        assert bad not in done and len(done) == VIDEOS - 1


def test_a_run_killed_mid_way_and_rerun_embeds_every_video_exactly_once(
        ray_cluster, synthetic_shards, trained_adapter, tmp_path):
    out = tmp_path / "index"
    model, _ = resolve_model(str(trained_adapter))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "jobs.embed", "--shards", str(synthetic_shards), "--model", str(trained_adapter),
               "--out", str(out), "--workers", "1", "--batch-size", "1", "--part-rows", "2",
               "--tracking-uri", tracking(tmp_path), "--ray-address", ray_cluster.get_runtime_context().gcs_address]
    job = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)

    def committed():
        ds = IndexStore(out).dataset()
        return ds.count_rows() if ds is not None else 0

    try:
        deadline = time.monotonic() + 180
        while committed() < 4:
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no fragment committed in time"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)     # its writer lease dies with it
        job.wait()
    kept = committed()
    assert 4 <= kept < VIDEOS

    report = embed(synthetic_shards, trained_adapter, out, tmp_path, workers=1)
    assert report.already_done == kept and report.embedded == VIDEOS - kept
    assert f"{kept} already embedded" in report.summary()
    ids = IndexStore(out).open().video_ids()
    assert len(ids) == VIDEOS and len(set(ids)) == VIDEOS
    # the re-run continued the MLflow run the killed one left unfinished
    runs = mlflow.MlflowClient(tracking(tmp_path)).search_runs(
        [mlflow.MlflowClient(tracking(tmp_path)).get_experiment_by_name("tempme-embed").experiment_id])
    assert [r.info.run_id for r in runs] == [report.mlflow_run_id]


def test_embed_command_reports_progress_into_an_object_store_index_that_search_reads(
        trained_index, synthetic_shards, trained_adapter, tmp_path, capsys, s3_server):
    """A real S3 server holds the index, written by the job's own Ray workers (a Ray of its own, started with
    the AWS variables that the server fixture set)."""
    uri = f"{s3_server.prefix('embed')}/index"
    command = [sys.executable, "-m", "jobs.embed", "--shards", str(synthetic_shards), "--model", str(trained_adapter),
               "--out", uri, "--workers", "1", "--batch-size", "4", "--part-rows", "4", "--progress-every", "0",
               "--tracking-uri", tracking(tmp_path), "--ray-address", "local"]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("embed: ")]
    assert lines[0].startswith(f"embed: {VIDEOS} videos in the shards, 0 already in {uri}, {VIDEOS} to embed")
    assert [line.split(" videos done")[0] for line in lines[1:]] == [f"embed: {n}/{VIDEOS}" for n in (4, 8, 12, 16)]
    assert lines[-1].startswith(f"embed: {VIDEOS}/{VIDEOS} videos done, 0 failed, ") and "videos/s" in lines[-1]
    assert f"{VIDEOS} embedded now" in done.stdout

    assert main(["search", "a red square moving left", "--index", uri, "-k", "3", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in found["results"][0]["hits"]] == [1, 2, 3] and found["index_version"] >= 1
    assert all(h["caption"] for h in found["results"][0]["hits"])
    queries = ["a red square moving left", "a blue bar moving up"]
    ours, local = TextSearch(uri).search(queries, k=5), TextSearch(trained_index[0]).search(queries, k=5)
    for a, b in zip(ours, local):      # the same model on the same shards: the same answers
        assert [h.video_id for h in a] == [h.video_id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)


def test_videos_that_preprocessing_recorded_as_removed_leave_the_index(
        trained_index, synthetic_shards, trained_adapter, tmp_path):
    shards, out = tmp_path / "shards", tmp_path / "index"
    shutil.copytree(synthetic_shards, shards)
    shutil.copytree(trained_index[0], out)
    gone = sorted(IndexStore(out).open().video_ids())[:3]
    removed = pa.table({"id": gone, "split": ["train"] * 3}, schema=REMOVED_SCHEMA)
    assert record_removed(Location.of(str(shards)), removed, read_removed(Location.of(str(shards))))
    report = embed(shards, trained_adapter, out, tmp_path, workers=1)
    assert (report.removed, report.embedded, report.already_done) == (3, 0, VIDEOS - 3)
    ids = IndexStore(out).open().video_ids()
    assert len(ids) == VIDEOS - 3 and not set(gone) & set(ids)
    assert "3 removed" in report.summary()


def test_removed_videos_of_every_folder_leave_the_index(trained_index, synthetic_shards, trained_adapter, tmp_path):
    """`--shards a,b`: each folder's removed-video table counts (not that of a folder named "a,b")."""
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "index"
    shutil.copytree(synthetic_shards, first)
    shutil.copytree(synthetic_shards, second)
    sample_table(Location.of(str(first))).delete("split = 'test'")     # the train split lives in one folder ...
    sample_table(Location.of(str(second))).delete("split = 'train'")   # ... the test split in the other
    shutil.copytree(trained_index[0], out)
    gone = sorted(sample_table(Location.of(str(second))).to_table(columns=["id"])["id"].to_pylist())[:2]
    removed = pa.table({"id": gone, "split": ["test"] * 2}, schema=REMOVED_SCHEMA)
    assert record_removed(Location.of(str(second)), removed, read_removed(Location.of(str(second))))
    report = embed(f"{first},{second}", trained_adapter, out, tmp_path, workers=1)
    assert (report.videos, report.removed, report.embedded) == (VIDEOS - 2, 2, 0)
    assert not set(gone) & set(IndexStore(out).open().video_ids())



@pytest.mark.slow
def test_two_embed_runs_at_once_on_one_s3_index_leave_every_video_exactly_once(
        synthetic_shards, trained_adapter, tmp_path, s3_server):
    """Two real `tempme embed` processes, each with a Ray of its own, against one index on the S3 server: one
    writes, the other stops with the lease message (or, started after the first finished, finds all done)."""
    uri = f"{s3_server.prefix('twice')}/index"
    command = [sys.executable, "-m", "jobs.embed", "--shards", str(synthetic_shards), "--model", str(trained_adapter),
               "--out", uri, "--workers", "1", "--batch-size", "4", "--part-rows", "4",
               "--tracking-uri", tracking(tmp_path), "--ray-address", "local"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    jobs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outcomes = [(job.wait(timeout=600), job.stdout.read(), job.stderr.read()) for job in jobs]
    for code, out, err in outcomes:
        assert code == 0 or (code == 2 and "is writing this index" in err and "Traceback" not in err), err[-2000:]
    assert any(code == 0 and f"{VIDEOS} embedded now" in out for code, out, _ in outcomes)
    ids = IndexStore(uri).open().video_ids()
    assert len(ids) == VIDEOS and len(set(ids)) == VIDEOS
