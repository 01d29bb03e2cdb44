"""What each stage's planning costs the Ray driver at millions of videos: peak memory, time, bytes read.

No media is needed to plan. For each size the benchmark writes a synthetic corpus of that many videos: the
shard folder's sample table (90% train, 5% val, 5% test, 256 videos per shard), its ledger, sparse tar
files of the sizes the table names, a Parquet manifest grown by 1% over it, and an index holding 99% of the
videos for one model version (8-dimensional embeddings: planning reads ids, not vectors). Each case then
runs in a fresh Python process, which reports its resident memory after its imports (`base_mb`) and at its
peak, the bytes it read (`/proc/self/io` rchar) and the wall time:

    preprocess      `plan_work` of the grown manifest over the corpus (inputs, ledger, what is new, removed)
    embed-nightly   the embedding driver's plan (`embed.job.plan_run`) with 99% of the videos embedded
    embed-nothing   the same once the index holds every video
    train-plan      the training driver: its plan (`train.plan.plan_training`: every split counted and checked)
                    with Ray Train's trainer imported, as the driver has it before `fit`
    evaluate-plan   the evaluation driver (`evaluate.on_cluster`): the test split counted and checked
    train-table     one training worker's `SampleTable` of the train split
    serve-start     the search service opening the index (an IVF_PQ index over it, as above 100k videos)

`per_video_b` is (peak - base) / videos: what the driver holds per video of the corpus; `todo` is what the
case found to do (videos to decode or embed).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.bench import common
from pipelines.model.registry import ModelRef

WORKDIR = "the synthetic corpora (about 150 bytes per video on disk, plus the index)"
EXAMPLE = "tempme bench plan --videos 1000000,10000000 --json"
CASES = ("preprocess", "embed-nightly", "embed-nothing", "train-plan", "evaluate-plan", "train-table", "serve-start")
PER_SHARD, SPAN, DIM, CHUNK = 256, 200_000, 8, 1_000_000
MODEL = {"name": "bench", "version": "1", "uri": "models:/bench/1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", default="1000000,10000000", help="corpus sizes, comma-separated (default "
                                                                     "%(default)s)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)} (default: all)")
    parser.add_argument("--preprocess-max", type=int, default=10_000_000,
                        help="largest corpus whose preprocess planning is measured (default %(default)s)")


def measure(args) -> dict:
    sizes = common.numbers(args.videos, "--videos")
    cases = common.names(args.cases, "--cases", CASES)
    say = common.progress(args)
    rows = []
    with common.scratch(args) as root:
        for videos in sizes:
            folder = root / f"corpus-{videos}"
            say(f"plan: writing a corpus of {videos:,} videos in {folder}")
            build_corpus(folder, videos)
            for case in [c for c in CASES if c in cases]:      # in this order: embed-nothing grows the index
                if case == "preprocess" and videos > args.preprocess_max:
                    continue
                if case == "embed-nothing":
                    complete_index(folder, videos)
                if case == "serve-start":
                    build_ann(folder)
                row = {"case": case, "videos": videos, **run_case(case, folder)}
                say(f"plan: {case} at {videos:,}: {row['seconds']:.1f} s, peak {row['peak_mb']:.0f} MB")
                rows.append(row)
    return {"benchmark": "plan", "rows": rows}


def render(result: dict) -> str:
    rows = [[r["case"], f"{r['videos']:,}", f"{r['seconds']:.1f}", f"{r['base_mb']:.0f}", f"{r['peak_mb']:.0f}",
             f"{r['per_video_b']:.0f}", f"{r['read_mb']:.0f}"] for r in result["rows"]]
    return ("Driver planning, each case in a fresh process\n"
            + common.table(["case", "videos", "seconds", "base MB", "peak MB", "B/video", "read MB"], rows))


def run_case(case: str, folder: Path) -> dict:
    """One case in a fresh Python process: its figures."""
    done = subprocess.run([sys.executable, "-m", "pipelines.bench.plan", case, str(folder)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    if done.returncode:
        raise RuntimeError(f"plan case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the synthetic corpus ---------------------------------------------------------------------------------

def _split_of(n: int):
    """(split, first, count) of a corpus of n videos: 90% train, 5% val, 5% test."""
    val = test = n // 20
    return [("train", 0, n - val - test), ("val", n - val - test, val), ("test", n - test, test)]


def _ids(first: int, count: int):

    numbers = pa.array(range(first, first + count), pa.int64())
    return pc.utf8_lpad(pc.cast(numbers, pa.string()), 10, "0")


def _sample_batches(videos: int):

    from pipelines.shards.format import SAMPLE_SCHEMA

    for split, first, count in _split_of(videos):
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            pos = np.arange(start, start + n)
            shard = pc.binary_join_element_wise(split + "-", pc.utf8_lpad(pc.cast(pa.array(pos // PER_SHARD),
                                                                                   pa.string()), 6, "0"), ".tar", "")
            offset = (pos % PER_SHARD) * SPAN
            ids = pc.binary_join_element_wise("v", _ids(first + start, n), "")
            yield pa.record_batch([ids, pa.array([split] * n), shard, ids, pa.array([""] * n), pa.array(offset),
                                   pa.array(offset + SPAN), pa.array(np.full(n, 12, np.int32)),
                                   pa.array(np.ones(n, np.int32)), pa.array(offset + 1024),
                                   pa.array(np.full(n, 9000)), pa.array([""] * n), pa.array([""] * n),
                                   pa.nulls(n, pa.float64()), pa.nulls(n, pa.float64())],    # whole videos
                                  schema=SAMPLE_SCHEMA)


def build_corpus(folder: Path, videos: int) -> None:
    """The shard folder (sample table, ledger, options, sparse tars), the grown manifest and the 99% index."""
    import lance

    from pipelines.preprocess.plan import LEDGER_SCHEMA
    from pipelines.shards.format import CATALOG_DIR, OPTIONS, PLANS_DIR, SAMPLE_SCHEMA, SAMPLES

    shards = folder / "shards"
    (shards / CATALOG_DIR).mkdir(parents=True)
    (shards / PLANS_DIR).mkdir()
    options = {"frames": 12, "fps": 1.0, "resolution": 224, "quality": 90, "samples_per_shard": PER_SHARD}
    (shards / CATALOG_DIR / OPTIONS).write_text(json.dumps(options))
    lance.write_dataset(pa.RecordBatchReader.from_batches(SAMPLE_SCHEMA, _sample_batches(videos)),
                        str(shards / SAMPLES))
    for split, _, count in _split_of(videos):
        for number in range((count + PER_SHARD - 1) // PER_SHARD):
            with open(shards / f"{split}-{number:06d}.tar", "wb") as f:
                f.truncate(PER_SHARD * SPAN + 1024)
    grown = videos + videos // 100
    with pq.ParquetWriter(shards / PLANS_DIR / "plan-000000.parquet", LEDGER_SCHEMA) as ledger, \
            pq.ParquetWriter(folder / "manifest.parquet", pa.schema([("video", pa.string()), ("id", pa.string()),
                                                                     ("captions", pa.list_(pa.string())),
                                                                     ("split", pa.string())])) as manifest:
        for batch in _sample_batches(videos):
            n, ids = batch.num_rows, batch["id"]
            uri = pc.binary_join_element_wise("/corpus/videos/", ids, ".mp4", "")
            captions = pa.array([["a person does something in this video"]] * n, pa.list_(pa.string()))
            ledger.write_table(pa.table([batch["shard"], batch["split"], ids, uri, captions,
                                         pa.array(["manifest.parquet"] * n)], schema=LEDGER_SCHEMA),
                               row_group_size=PER_SHARD)       # as the job writes its plans: a group a shard
            manifest.write_table(pa.table({"video": uri, "id": ids, "captions": captions, "split": batch["split"]}))
        for start in range(videos, grown, CHUNK):       # the 1% the corpus grew by: new videos of train
            n = min(CHUNK, grown - start)
            ids = pc.binary_join_element_wise("w", _ids(start, n), "")
            manifest.write_table(pa.table({
                "video": pc.binary_join_element_wise("/corpus/videos/", ids, ".mp4", ""), "id": ids,
                "captions": pa.array([["a new video"]] * n, pa.list_(pa.string())), "split": ["train"] * n}))
    _write_index(folder, _sample_batches(videos), keep=0.99)


def _index_rows(batch, n: int):
    from pipelines.index.rows import video_schema

    emb = np.random.default_rng(n).standard_normal((batch.num_rows, DIM)).astype(np.float32)
    now = dt.datetime.now(dt.UTC)
    return pa.record_batch([batch["id"], pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), DIM),
                            *(pa.array([MODEL[k]] * batch.num_rows) for k in ("name", "version", "uri")),
                            pa.array([now] * batch.num_rows, pa.timestamp("us", tz="UTC")), batch["id"],
                            batch["shard"], batch["thumb_offset"], batch["thumb_size"], batch["source"],
                            batch["window_start"], batch["window_end"]], schema=video_schema(DIM))


def _write_index(folder: Path, batches, keep: float) -> None:
    """The index of the first `keep` of every batch's videos for the bench model version."""
    import lance

    from pipelines.index.rows import LIVE_KEY, PENDING_KEY, VIDEOS, video_schema

    rows = (_index_rows(b.slice(0, int(b.num_rows * keep)), i) for i, b in enumerate(batches))
    ds = lance.write_dataset(pa.RecordBatchReader.from_batches(video_schema(DIM), rows),
                             str(folder / "index" / VIDEOS))
    ds.update_config({LIVE_KEY: ModelRef(**MODEL).to_json(), PENDING_KEY: ""})


def complete_index(folder: Path, videos: int) -> None:
    """Add the 1% the index lacked: now it holds every video of the shards."""
    import lance

    from pipelines.index.rows import VIDEOS, video_schema

    rows = [_index_rows(b.slice(int(b.num_rows * 0.99)), i) for i, b in enumerate(_sample_batches(videos))]
    lance.write_dataset(pa.RecordBatchReader.from_batches(video_schema(DIM), iter(rows)),
                        str(folder / "index" / VIDEOS), mode="append")


def build_ann(folder: Path) -> None:
    """A quick, coarse IVF_PQ index (what a replica opens is measured here, not its recall), recorded as the
    embedding job records its own."""
    import lance

    from pipelines.index.rows import VIDEOS, live_model
    from pipelines.index.search import SETTINGS_KEY, AnnSettings

    ds = lance.dataset(str(folder / "index" / VIDEOS))
    settings = AnnSettings("IVF_PQ", partitions=64, probes=8, refine=0, model=live_model(ds).to_json(),
                           trained_rows=ds.count_rows())
    ds.create_index("embedding", "IVF_PQ", metric="dot", num_partitions=64, num_sub_vectors=2)
    ds.update_config({SETTINGS_KEY: settings.to_json()})


# --- one case, in the child process ------------------------------------------------------------------------

def _status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak since this process started its program) in MiB."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) / 1024


def _read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def _case(case: str, folder: Path) -> None:
    from pipelines.embed.job import plan_run
    from pipelines.index import IndexStore
    from pipelines.preprocess.job import PreprocessOptions, plan_work
    from pipelines.shards.reader import SampleTable, SplitCount
    from pipelines.train.config import load_config
    from pipelines.train.plan import plan_training

    shards = str(folder / "shards")
    if case == "train-plan":
        import ray.train.torch  # noqa: F401  (what the driver holds besides its plan)
    if case == "evaluate-plan":
        import pipelines.evaluate.on_cluster  # noqa: F401
    base, read, started = _status_mb("VmRSS"), _read_bytes(), time.perf_counter()
    todo = None
    if case == "preprocess":
        work = plan_work(PreprocessOptions(out=shards, manifest=str(folder / "manifest.parquet")),
                         log=lambda line: None)
        todo = sum(p.videos for p in work.pending) + sum(len(s.rows) for s in work.added)
    elif case.startswith("embed"):
        with IndexStore(folder / "index").writer(ModelRef(**MODEL), "bench") as writer:
            plan, _ = plan_run(writer, [shards], 16)
            plan.remove()
        todo = plan.todo
    elif case == "train-plan":
        todo = plan_training(load_config("tiny", [f"data.shards={shards}", "data.eval_split=val",
                                                  "data.select_on_test=false"])).train_pairs
    elif case == "evaluate-plan":
        todo = SplitCount.count([shards], "test").videos
    elif case == "train-table":
        SampleTable.build([shards], "train")
    else:
        IndexStore(folder / "index").open()
    seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM")     # not ru_maxrss, which a program inherits from the process that started it
    videos = int(folder.name.split("-")[1])
    print(json.dumps({"seconds": round(seconds, 2), "base_mb": round(base, 1), "peak_mb": round(peak, 1),
                      "per_video_b": round((peak - base) * 2**20 / videos, 1),
                      "read_mb": round((_read_bytes() - read) / 2**20, 1), "todo": todo}))


if __name__ == "__main__":
    _case(sys.argv[1], Path(sys.argv[2]))
