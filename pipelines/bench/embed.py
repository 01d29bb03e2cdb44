"""The embedding job against a plain loop doing the same work in one process, over the same shards with the
same model, 1 and 2 workers: videos/s side by side.

The plain loop is what one would write by hand without Ray: the same samples (`sample_batches`), read with the
shard reader (`SampleReader`, `frames_to_tensor`) and encoded batch by batch with the same adapter, in one
process with one torch thread. The job adds Ray Data scheduling, actor start-up, rows shipped to and from the
actors (one CPU and one torch thread each), frame decoding in tasks of their own, the fragment writers,
the index's commits and its MLflow run. Each job run writes into a
fresh index folder, so it embeds every video, and its index must hold the plain loop's embeddings.

Three rates per measurement, all videos/s, the Ray cluster being up already:
    end_to_end   the whole call
    stage        from the start of the embedding work: the job's own `EmbedReport.seconds` (actor start-up
                 and model load included); for the loop, model load and loop
    steady       after every worker's first batch is in (slope of videos done against time): start-up and
                 model load left out on both sides; it needs several batches per worker to mean much
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import tempme
from pipelines.bench import common
from pipelines.model.registry import build_model
from pipelines.tracking import get_or_create_experiment
from tempme.errors import UserError

WORKDIR = "the corpus, the model and the indexes"
EXAMPLE = "tempme bench embed --videos 64 --preset tempme-tiny-12f --batch-size 8"
EXPERIMENT = "bench-embed"
RATES = {"end_to_end": "end-to-end", "stage": "embedding stage", "steady": "steady"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", help="shard folder to embed (default: a synthetic corpus preprocessed here)")
    parser.add_argument("--videos", type=int, default=64,
                        help="videos of the synthetic corpus made when no --shards (default %(default)s)")
    parser.add_argument("--preset", default="tempme-tiny-12f",
                        help="model preset, random weights (default %(default)s; tempme-b32-12f for real size)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per model call (default %(default)s)")
    parser.add_argument("--workers", default="1,2",
                        help="comma-separated worker counts of the job; the first is the base of the scaling "
                             "(default %(default)s)")


def measure(args) -> dict:
    from pipelines.demo.synthetic import make_synthetic_shards

    counts = common.numbers(args.workers, "--workers")
    with common.scratch(args) as work:
        adapter = make_random_adapter(args.preset, work / "model")
        common.start_ray(max(counts) + 1)   # one CPU more than the actors need: decode and write run beside them
        shards = Path(args.shards) if args.shards else make_synthetic_shards(work / "synthetic", args.videos)
        result = run_benchmark(shards, adapter, work / "runs", args.batch_size, tuple(counts))
        reads = shard_reads(str(shards), args.batch_size)
    base = next((m for m in result.jobs if m.workers == 1), None)   # same resources as the plain loop
    return {**asdict(result), "preset": args.preset, "reads": reads,
            "overhead_pct_1_worker": {r: result.overhead(base, r) for r in RATES} if base else None,
            "scaling": [{"workers": m.workers, **{r: result.scaling(m, r) for r in RATES}} for m in result.jobs[1:]]}


def render(result: dict) -> str:
    def cells(values: dict, spec: str, unit: str = "") -> list[str]:
        return ["n/a" if values[r] is None else format(values[r], spec) + unit for r in RATES]

    jobs = result["jobs"]
    rows = [["plain loop (no Ray)", *cells(result["plain"], ".2f")]]
    rows += [[f"embed job, {m['workers']} worker" + ("s" if m["workers"] > 1 else ""), *cells(m, ".2f")] for m in jobs]
    if result["overhead_pct_1_worker"]:
        rows.append(["job overhead, 1 worker", *cells(result["overhead_pct_1_worker"], "+.1f", "%")])
    rows += [[f"{s['workers']} vs {jobs[0]['workers']} workers", *cells(s, ".2f", "x")] for s in result["scaling"]]
    return "\n".join([
        f"embed benchmark: {result['plain']['videos']} videos of {result['shards']}, model {result['preset']} "
        f"(random weights), batch {result['batch_size']}, CPU",
        "one torch thread per process: the plain loop runs in this process with 1 thread (no Ray); "
        "each job actor has 1 CPU and 1 thread",
        common.table(["videos/s", *RATES.values()], rows),
        f"embeddings: every job index equals the plain loop's (largest difference {result['max_difference']:.1e})",
        "reading a batch's samples: {per_sample_requests:.1f} requests a sample at a time "
        "({per_sample_videos_per_s:.0f} "
        "videos/s), {coalesced_requests:.1f} a run of neighbours at a time as the job reads "
        "({coalesced_videos_per_s:.0f} videos/s)".format(**result["reads"]),
        "end-to-end: the whole call, the Ray cluster being up already\n"
        "embedding stage: the job's own EmbedReport.seconds, actor start and model load included "
        "(plain loop: model load + loop)\n"
        "steady: slope of videos done against time after every worker's first batch (n/a: too few batches)\n"
        "overhead: extra time per video over the plain loop"])


@dataclass(frozen=True)
class Measurement:
    runner: str                      # "plain loop" or "embed job"
    workers: int                     # processes embedding, one torch thread each
    videos: int                      # videos embedded
    seconds: float                   # end to end
    end_to_end: float                # videos/s
    stage: float                     # videos/s
    steady: float | None             # videos/s; None with too few batches after every worker's first
    index: str | None = None         # the job's index folder


@dataclass(frozen=True)
class EmbedBenchmark:
    shards: str
    adapter: str
    batch_size: int
    plain: Measurement
    jobs: list[Measurement]
    max_difference: float            # largest |job index - plain loop| over every embedding element

    def overhead(self, job: Measurement, rate: str) -> float | None:
        """Extra time per video of `job` over the plain loop, in % (by the rate named `rate`)."""
        ours, theirs = getattr(job, rate), getattr(self.plain, rate)
        return 100 * (theirs / ours - 1) if ours and theirs else None

    def scaling(self, job: Measurement, rate: str) -> float | None:
        """`job`'s rate over the first job measurement's (e.g. 2 workers vs 1)."""
        ours, base = getattr(job, rate), getattr(self.jobs[0], rate)
        return ours / base if ours and base else None


class _Arrivals:
    """When each batch came in and how many videos were done by then; `progress` callback of the job."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []

    def __call__(self, done: int, total: int | None = None) -> None:
        self.marks.append((time.perf_counter(), done))

    def steady(self, first_batches: int) -> float | None:
        """Videos/s from the arrival of batch number `first_batches` on: the least-squares slope of videos done
        against time, so that batches the pipeline hands over in bursts do not skew it; None with fewer than
        three arrivals to fit."""
        marks = np.asarray(self.marks[max(first_batches, 1) - 1:], dtype=np.float64)
        if len(marks) < 3 or np.ptp(marks[:, 0]) <= 0:
            return None
        return float(np.polyfit(marks[:, 0] - marks[0, 0], marks[:, 1], 1)[0])


def make_random_adapter(preset: str, folder: str | Path) -> Path:
    """A random-weight adapter of `preset` (same weights every time): throughput does not depend on training."""
    return build_model(preset).save_adapter(Path(folder) / preset)


def plain_loop(shards: str, adapter_dir: Path, batch_size: int) -> tuple[Measurement, dict[str, np.ndarray]]:
    """Embed every video of `shards` in this process with one torch thread: (measurement, id -> embedding)."""
    import torch

    from pipelines.shards.frames import frames_to_tensor
    from pipelines.shards.reader import SampleReader, sample_batches

    started = time.perf_counter()
    samples = [(folder.child(r["shard"]).uri, r["start"], r["end"], r["id"])
               for folder, batch in sample_batches([shards], ["id", "shard", "start", "end"])
               for r in batch.to_pylist()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reader, arrivals, embeddings = SampleReader(), _Arrivals(), {}
    try:
        stage_started = time.perf_counter()
        model = tempme.load_model(adapter=adapter_dir).for_inference()   # the same inference form as the job
        with torch.inference_mode():
            for i in range(0, len(samples), batch_size):
                batch = samples[i:i + batch_size]
                videos, masks = zip(*(frames_to_tensor(reader.read(*s[:3])[1], model.config.frames) for s in batch))
                out = model.encode_video(torch.stack(videos), torch.stack(masks)).float().numpy()
                embeddings.update(zip((s[3] for s in batch), out))
                arrivals(len(embeddings))
    finally:
        reader.close()
        torch.set_num_threads(threads)
    ended = time.perf_counter()
    n = len(embeddings)
    return Measurement("plain loop", 1, n, ended - started, n / (ended - started), n / (ended - stage_started),
                       arrivals.steady(1)), embeddings


def job_run(shards: str, adapter_dir: Path, out: Path, workers: int, batch_size: int,
            tracking_uri: str) -> Measurement:
    """One `embed_corpus` run on CPU actors with one CPU (one torch thread) each, into the empty folder `out`."""
    from pipelines.embed import EmbedOptions, embed_corpus

    if out.exists():
        raise FileExistsError(f"{out} exists: each measured run needs a fresh index folder")
    arrivals = _Arrivals()
    started = time.perf_counter()
    report = embed_corpus(EmbedOptions(shards=shards, model=str(adapter_dir), out=str(out), workers=workers,
                                       batch_size=batch_size, device="cpu", cpus_per_worker=1,
                                       tracking_uri=tracking_uri, experiment=EXPERIMENT), progress=arrivals)
    seconds = time.perf_counter() - started
    if report.failed or report.already_done:
        raise RuntimeError(f"{out}: the job embedded {report.embedded} of {report.videos} videos "
                           f"({report.failed} failed, {report.already_done} already done); not comparable")
    return Measurement("embed job", workers, report.embedded, seconds, report.embedded / seconds,
                       report.videos_per_s, arrivals.steady(workers), str(out))


def shard_reads(shards: str, batch_size: int) -> dict:
    """Ranged requests per batch and videos/s of reading the samples alone, one sample at a time against one
    read per run of neighbouring samples (`SampleReader.read_many`, what the embedding job does)."""
    from pipelines.shards.reader import SampleReader, sample_batches

    samples = [(folder.child(r["shard"]).uri, r["start"], r["end"])
               for folder, batch in sample_batches([shards], ["shard", "start", "end"]) for r in batch.to_pylist()]
    batches = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    result = {}
    for way in ("per_sample", "coalesced"):
        reader = SampleReader()
        started = time.perf_counter()
        for batch in batches:
            if way == "coalesced":
                reader.read_many(*zip(*batch))
            else:
                for sample in batch:
                    reader.read(*sample)
        seconds = time.perf_counter() - started
        reader.close()
        result[f"{way}_requests"] = reader.requests / len(batches)
        result[f"{way}_videos_per_s"] = len(samples) / seconds
    return result


def index_embeddings(index: str | Path) -> dict[str, np.ndarray]:
    """video id -> embedding of the latest version of an index."""
    from pipelines.index import IndexStore

    ds = IndexStore(index).dataset()
    if ds is None:
        return {}
    table = ds.to_table(columns=["video_id", "embedding"])
    vectors = table.column("embedding").combine_chunks()
    return dict(zip(table.column("video_id").to_pylist(), vectors.values.to_numpy().reshape(len(table), -1)))


def _largest_difference(index: Path, reference: dict[str, np.ndarray]) -> float:
    found = index_embeddings(index)
    if found.keys() != reference.keys():
        raise RuntimeError(f"{index}: the job's index holds {len(found)} videos, the plain loop embedded "
                           f"{len(reference)}; {len(found.keys() ^ reference.keys())} differ")
    return max(float(np.abs(found[k] - v).max()) for k, v in reference.items())


def run_benchmark(shards: str | Path, adapter_dir: str | Path, workdir: str | Path, batch_size: int = 8,
                  worker_counts: tuple[int, ...] = (1, 2)) -> EmbedBenchmark:
    """Plain loop, then the job with each worker count, on an already started Ray cluster; index folders and
    the MLflow store go under `workdir`."""
    import ray

    if batch_size < 1 or not worker_counts or min(worker_counts) < 1:
        raise UserError(f"batch size and worker counts must be at least 1 (got {batch_size} and {worker_counts})")
    cpus = ray.cluster_resources().get("CPU", 0)
    if max(worker_counts) > cpus:
        raise UserError(f"{max(worker_counts)} workers need as many CPUs; the Ray cluster has {cpus:g}")
    shards, adapter_dir, workdir = str(shards), Path(adapter_dir), Path(workdir)
    tracking_uri = f"sqlite:///{workdir.resolve()}/mlflow.db"
    workdir.mkdir(parents=True, exist_ok=True)
    get_or_create_experiment(EXPERIMENT, tracking_uri)   # the store is created before anything is timed,
    ray.data.range(1).materialize()                      # and so is Ray Data's one-time set-up in this process
    plain, reference = plain_loop(shards, adapter_dir, batch_size)
    jobs, difference = [], 0.0
    for i, workers in enumerate(worker_counts):
        out = workdir / f"index-{i}-{workers}w"
        jobs.append(job_run(shards, adapter_dir, out, workers, batch_size, tracking_uri))
        difference = max(difference, _largest_difference(out, reference))
    return EmbedBenchmark(shards, str(adapter_dir), batch_size, plain, jobs, difference)
