"""The preprocessing job: inputs -> ledger -> one Ray task per shard -> shards, resumable and append-only.

The driver reads the inputs, compares them with the ledger of shards already planned in the output folder
(`plan`), writes the plan of the new shards, and submits one task per unfinished shard (`shard_tasks`);
each task decodes its videos and writes its shard and its rows of the sample table where Ray runs it, and
sends back a few numbers and the rows' fragment descriptions, which the driver commits in batches. The
driver then rewrites the summary and the failure table from the sample table. A shard is the unit of work:
a killed run loses at most the shards it had not committed, and a re-run over a grown corpus decodes only
new videos.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipelines.cluster.connect import check_stores_from_a_worker, connect, spans_nodes
from pipelines.cluster.progress import Progress
from pipelines.options import ClusterOptions, comma_list, option
from pipelines.preprocess.inputs import Inputs, collect_inputs
from pipelines.preprocess.plan import (
    Ledger,
    NewShard,
    PlanError,
    ShardRef,
    forget_plans,
    plan_new,
    record_removed,
    write_plans,
)
from pipelines.preprocess.sample import DecodeSettings
from pipelines.preprocess.sampling import Segmenting
from pipelines.preprocess.sources import Failure, InputError, read_folder, read_manifest, read_msrvtt
from pipelines.preprocess.summary import latest_failures, summarize, write_report
from pipelines.preprocess.upgrade import upgrade_folder
from pipelines.preprocess.writer import finished_shards, remove_unfinished
from pipelines.shards.format import (
    CATALOG_DIR,
    KNOWN_SPLITS,
    OPTIONS,
    TRANSIENT_STAGES,
    commit_samples,
    compact_samples,
    folder_lease,
    read_removed,
    sample_table,
    sql_text,
    upgrade_samples,
)
from pipelines.shards.id_set import IdSet
from pipelines.storage.lease import Lease, run_name
from pipelines.storage.location import Location, StoreError, sweep_spool
from tempme.errors import UserError

COMMIT_SHARDS = 64       # finished shards whose rows are committed together ...
COMMIT_SECONDS = 30.0    # ... or what finished in this long, whichever comes first
COMPACT_EVERY = 50       # commits between compactions of the sample table during a run
INPUTS = "input (one of)"


class OptionsError(UserError):
    """Options that cannot work, found before any video is touched."""


@dataclass
class PreprocessOptions(ClusterOptions):
    out: str = option(help="output folder or URI; re-running over it completes it")
    msrvtt: str | None = option(None, "folder with MSRVTT_data.json, MSRVTT_train.9k.csv and "
                                      "MSRVTT_JSFUSION_test.csv (9k train and 1k-A test splits)",
                                metavar="DIR", group=INPUTS)
    videos: str | None = option(None, "a folder or bucket prefix walked for video files, each a corpus video named "
                                      "by its path under DIR; with --msrvtt: the folder of {video_id}.mp4",
                                metavar="DIR", group=INPUTS)
    manifest: str | None = option(None, "CSV, JSONL or Parquet with a column video (path or URI, relative to the "
                                        "manifest) and optionally id (default: the video's path), captions (list, "
                                        "or in CSV a JSON list or one caption; needed in train, val and test), "
                                        "split (train, val, test or corpus, the default: embedded and searched, "
                                        "never trained on)", metavar="FILE", group=INPUTS)
    frames: int = option(12, "frames per video")
    fps: float = option(1.0, "rate frames are taken at before spreading --frames of them uniformly")
    resolution: int = option(224, "frame side: short side scaled (bicubic) and centre-cropped")
    quality: int = option(90, "JPEG quality 1-100")
    samples_per_shard: int = option(256, "videos per shard")
    decoders: int | None = option(None, "most shards decoded at once, one CPU each (default: no cap; every "
                                        "unfinished shard is asked for, so an autoscaling cluster grows to the work)")
    retry_failed: bool = option(False, "decode again, into new shards, the videos whose last failure was "
                                       "transient (read error, timeout, worker lost)")
    splits: tuple[str, ...] | None = option(None, "only these splits, comma-separated (train, val, test, corpus; "
                                                  "default all)", parse=comma_list)
    segment_seconds: float | None = option(None, "cut each corpus video into windows of S seconds (the last one "
                                                 "shorter), each a sample searched on its own, so a hit says where "
                                                 "in a long video the match is (default: a video is one sample)",
                                           metavar="S")
    segment_overlap: float = option(0.0, "seconds each window shares with the one before", metavar="O")
    timeout: float = option(600.0, "seconds one video may take")
    spool_gb: int = option(8, "GB of local disk a decode task may use for the shard it writes and the one video "
                              "it downloads (those decoded whole): a larger video fails as stage spool; asked of "
                              "Ray as the custom resource spool_gb where the nodes declare it (ray start "
                              "--resources '{\"spool_gb\": N}'), so a node runs no more tasks than its disk holds")
    progress_every: float = option(10.0, "seconds between progress lines")

    def shape(self) -> dict:
        """The options that decide what the shards hold; a resumed job must use the same. Segmenting is named
        only when set, so folders written before it existed resume as they were."""
        keys = ["frames", "fps", "resolution", "quality", "samples_per_shard"]
        keys += ["segment_seconds", "segment_overlap"] if self.segment_seconds else []
        return {k: getattr(self, k) for k in keys}

    def segmenting(self) -> Segmenting | None:
        return Segmenting(self.segment_seconds, self.segment_overlap) if self.segment_seconds else None


@dataclass
class PreprocessReport:
    out: str
    summary: dict
    failures: list[Failure]
    resumed: int = 0                   # videos already in shards finished by an earlier run
    processed: int = 0                 # videos decoded by this run
    removed: int = 0                   # videos that left the inputs (recorded, skipped by readers)
    rate: float = 0.0                  # videos/s while decoding (Ray start-up excluded)
    seconds: float = 0.0               # the whole run
    shards_written: list[str] = field(default_factory=list)
    shards_unwritten: dict[str, str] = field(default_factory=dict)   # shard -> why (the next run writes it)
    nodes: dict[str, int] = field(default_factory=dict)              # Ray node -> shards it wrote
    decoded_by: dict[str, int] = field(default_factory=dict)         # samples found by seeking / decoding it all

    @property
    def ok(self) -> bool:
        return not self.failures and not self.shards_unwritten


def check_options(o: PreprocessOptions) -> None:
    """Raise OptionsError naming the first option that cannot work."""
    if o.msrvtt and o.manifest or not (o.msrvtt or o.manifest or o.videos) or (o.manifest and o.videos):
        raise OptionsError("give exactly one input: --manifest FILE, --videos DIR (a folder of videos), "
                           "or --msrvtt DIR with --videos DIR")
    _check_stores([(flag, value) for flag, value in (("--out", o.out), ("--manifest", o.manifest),
                                                     ("--msrvtt", o.msrvtt), ("--videos", o.videos)) if value])
    if o.msrvtt:
        if not o.videos:
            raise OptionsError("--msrvtt needs --videos DIR (the folder of {video_id}.mp4)")
        for flag, value in (("--msrvtt", o.msrvtt), ("--videos", o.videos)):
            if not Location.of(value).is_dir():
                raise OptionsError(f"{flag} {value}: no such folder")
    elif o.manifest and not Location.of(o.manifest).exists():
        raise OptionsError(f"--manifest {o.manifest}: no such file")
    elif o.videos and not Location.of(o.videos).is_dir():
        raise OptionsError(f"--videos {o.videos}: no such folder")
    limits = [("--frames", o.frames, 1, 4096), ("--resolution", o.resolution, 16, 4096),
              ("--quality", o.quality, 1, 100), ("--samples-per-shard", o.samples_per_shard, 1, 10**6)]
    for flag, value, low, high in limits:
        if not isinstance(value, int) or not low <= value <= high:
            raise OptionsError(f"{flag} must be an integer from {low} to {high}, got {value!r}")
    if not o.fps > 0:
        raise OptionsError(f"--fps must be above 0, got {o.fps!r}")
    if o.decoders is not None and o.decoders < 1:
        raise OptionsError(f"--decoders must be at least 1, got {o.decoders!r}")
    if not o.timeout > 0:
        raise OptionsError(f"--timeout must be above 0, got {o.timeout!r}")
    if o.segment_seconds is not None and not o.segment_seconds * o.fps >= 1:
        raise OptionsError(f"--segment-seconds must hold at least one frame at --fps {o.fps:g}, "
                           f"got {o.segment_seconds!r}")
    if o.segment_overlap and not (o.segment_seconds and 0 <= o.segment_overlap < o.segment_seconds):
        raise OptionsError(f"--segment-overlap must be from 0 to below --segment-seconds, got {o.segment_overlap!r}")
    unknown = [s for s in (o.splits or ()) if s not in KNOWN_SPLITS]
    if unknown:
        raise OptionsError(f"unknown split {unknown[0]!r} (known: {', '.join(KNOWN_SPLITS)})")
    out = Location.of(o.out)
    if out.exists() and not out.is_dir():
        raise OptionsError(f"--out {o.out} is a file, not a folder")


def _check_stores(places: list[tuple[str, str]]) -> None:
    """Every object store among `places` ((what, URI) pairs) must be reachable before anything else (no
    such bucket, refused credentials): one clear message rather than a failure row for every video."""
    try:
        for what, uri in places:
            Location.of(uri).check_usable(what)
    except (StoreError, OSError) as e:
        raise OptionsError(str(e)) from None


@dataclass
class Work:
    """What a run has to do, found before any Ray task or write of a plan: `plan_work`'s answer."""

    out: Location
    inputs: Inputs                     # the videos the inputs list, and the rows they rejected
    ledger: Ledger                     # every plan so far
    recorded: pa.Table                 # the removed-video table as it is
    removed: pa.Table                  # as it will be
    finished: set[str]                 # shards done
    new: int                           # videos never planned
    retried: int                       # videos planned again (--retry-failed)
    added: list[NewShard]              # new shards
    pending: list[ShardRef]            # planned shards not finished (a killed run's)
    stale: int                         # temporary files and unfinished uploads of a killed run, removed


def plan_work(options: PreprocessOptions, log: Callable[[str], None] = print, inputs: Inputs | None = None
              ) -> Work:
    """Read the inputs (unless given, from `read_inputs`) and the output folder and find what a run has to do.
    Raises OptionsError if it cannot."""
    if inputs is None:
        inputs = read_inputs(options)
    out = Location.of(options.out)
    out.child(CATALOG_DIR).make_dirs()
    if upgraded := upgrade_folder(out):
        log(f"preprocess: {out.uri} was written before the sample table: converted its {upgraded} shard "
            "catalogs into it, once")
    finished = finished_shards(out)
    _check_same_shape(out, options, finished)
    stale = remove_unfinished(out)
    ledger = Ledger.read(out)
    found = np.where(inputs.counted, ledger.ids.find(inputs.prints), -1)   # where each counted input is planned
    try:
        ledger.check_same_videos(out, inputs, found)
    except PlanError as e:
        raise OptionsError(f"{input_name(options)}: {e}") from None
    if unknown := finished - ledger.names():
        raise OptionsError(f"{out.uri} holds shards that no plan lists (e.g. {min(unknown)}): it was written by "
                           "an older version of this job; write to a new --out")
    recorded = read_removed(out)
    removed = ledger.removed(out, found, options.splits, recorded)
    new = inputs.counted & (found < 0)
    retried = (found >= 0) & (
        _transient(latest_failures(out, ledger, removed["id"].combine_chunks(), []), inputs)
        if options.retry_failed else False)
    added = plan_new(inputs, np.flatnonzero(new | retried), options.samples_per_shard, ledger.last_numbers())
    return Work(out, inputs, ledger, recorded, removed, finished, int(new.sum()), int(retried.sum()), added,
                ledger.pending(finished), stale)


def run_preprocess(options: PreprocessOptions, log: Callable[[str], None] = print) -> PreprocessReport:
    """Make, complete or extend the shards in `options.out`. Raises OptionsError before any work if it cannot,
    and FolderBusy, before touching anything, while another run writes the folder."""
    started = time.monotonic()
    sweep_spool()                          # a killed run's local files on this machine
    inputs = read_inputs(options)          # reads, checks, touches nothing
    with folder_lease(Location.of(options.out), run_name(), "preprocess run") as lease:
        return _run(options, inputs, lease, log, started)


def _run(options: PreprocessOptions, inputs: Inputs, lease: Lease, log: Callable[[str], None], started: float
         ) -> PreprocessReport:
    w = plan_work(options, log, inputs)
    out, ledger = w.out, w.ledger
    spool = {}
    if w.pending or w.added:
        spool = _connect(options, out, list(w.inputs.buckets.values()))
    pending = w.pending
    lease.check()
    if w.added:
        pending = pending + write_plans(out, w.inputs, w.added)
        ledger = Ledger.read(out)      # with this run's plans: a video planned again has a new last shard
    record_removed(out, w.removed, w.recorded)
    upgrade_samples(out)
    resumed = ds.count_rows() if (ds := sample_table(out)) is not None else 0
    log(f"preprocess: {len(w.inputs)} videos, {len(w.inputs.failures)} rejected inputs; {len(w.finished)} shards "
        f"already done ({resumed} videos), {w.new} new videos"
        + (f", {w.retried} to retry" if options.retry_failed else "")
        + f", {w.removed.num_rows} removed; {len(pending)} shards to make"
        + (f"; removed {w.stale} unfinished files and uploads" if w.stale else ""))
    progress = Progress("preprocess", sum(p.videos for p in pending), options.progress_every, log)
    done = _make_shards(pending, options, out, progress, lease, spool) if pending else []
    written = [d for d in done if not d.error]
    summary, failures = summarize(out, ledger, w.removed, w.inputs.failures,
                                  {**options.shape(), "input": input_name(options)})
    write_report(out, summary, failures)
    nodes: dict[str, int] = {}
    for d in written:
        nodes[d.node] = nodes.get(d.node, 0) + 1
    seeked = sum(d.seeked for d in written)
    report = PreprocessReport(out.uri, summary, failures, resumed, progress.done, w.removed.num_rows,
                              progress.rate(), time.monotonic() - started, sorted(d.name for d in written),
                              {d.name: d.error for d in done if d.error}, nodes,
                              {"seek": seeked, "sequential": sum(d.samples for d in written) - seeked})
    for line in closing_lines(report):
        log(line)
    return report


def _transient(failures: list[Failure], inputs: Inputs) -> np.ndarray:
    """Which input rows' latest failure was transient: what `--retry-failed` plans again."""
    ids = pa.array([f.id for f in failures if f.stage in TRANSIENT_STAGES], pa.string())
    return IdSet([ids]).holds(inputs.prints)


def _connect(o: PreprocessOptions, out: Location, buckets: list[tuple[str, str]]) -> dict[str, float]:
    """Join (or start) Ray; refuse a local --out that the cluster's nodes would each see as their own, stores
    that a worker cannot reach, and a --spool-gb no node has. Returns the spool a task asks Ray for."""
    import ray

    from pipelines.preprocess.shard_tasks import spool_resources

    connect(o.ray_address)
    if out.is_local and spans_nodes(ray.nodes()):
        raise OptionsError(f"--out {o.out} is a local folder, but this Ray cluster spans several nodes, which "
                           "would each write their shards to their own disk: use an object-store URI "
                           "(s3://bucket/shards, gs://...)")
    try:
        check_stores_from_a_worker([("--out", out.uri), *buckets])
    except StoreError as e:
        raise OptionsError(str(e)) from None
    try:
        return spool_resources(o.spool_gb, ray.nodes())
    except ValueError as e:
        raise OptionsError(f"--spool-gb {o.spool_gb}: {e}") from None


def _make_shards(pending: list[ShardRef], o: PreprocessOptions, out: Location, progress: Progress,
                 lease: Lease, spool: dict[str, float]) -> list:
    """Run the shard tasks, committing their rows of the sample table as they come, in batches."""
    from pipelines.preprocess.shard_tasks import run_shards

    settings = DecodeSettings(o.frames, o.fps, o.resolution, o.quality, o.timeout, o.segmenting(), o.spool_gb << 30)
    commits = SampleCommits(out, lease)

    def finished(d) -> None:
        if not d.error:
            commits.add(d.name, d.fragments)
        progress.update(done=0 if d.error else d.videos, failed=d.failed)

    progress.start()
    try:
        return run_shards(pending, settings, out, o.decoders, on_done=finished, resources=spool)
    finally:
        commits.flush()     # also when interrupted: what finished stays finished
        compact_samples(out)


class SampleCommits:
    """The finished shards' rows, committed to the sample table in batches (the first shard at once), and the
    table compacted every `COMPACT_EVERY` commits: a version per batch and a few large fragments, rather than a
    version per shard and a fragment each, keep a first run of tens of thousands of shards from writing an
    ever longer manifest each time. A killed run loses at most the last batch, whose shards the next run makes
    again, identically. A shard whose rows are in the table already (another run made it meanwhile) is not
    committed twice."""

    def __init__(self, out: Location, lease: Lease, shards: int = COMMIT_SHARDS, seconds: float = COMMIT_SECONDS):
        self.out, self.lease, self.shards, self.seconds = out, lease, shards, seconds
        self.pending: dict[str, tuple[str, ...]] = {}      # shard -> its rows' fragments
        self.since, self.commits = -float("inf"), 0

    def add(self, shard: str, fragments: tuple[str, ...]) -> None:
        self.pending[shard] = fragments
        if len(self.pending) >= self.shards or time.monotonic() - self.since >= self.seconds:
            self.flush()

    def flush(self) -> None:
        ds = sample_table(self.out)
        if ds is not None and self.pending:
            names = ", ".join(sql_text(name) for name in self.pending)
            for shard in set(ds.to_table(columns=["shard"], filter=f"shard IN ({names})")["shard"].to_pylist()):
                del self.pending[shard]
        if fragments := [f for written in self.pending.values() for f in written]:
            self.lease.check()
            commit_samples(self.out, fragments)
            self.commits += 1
            if self.commits % COMPACT_EVERY == 0:
                compact_samples(self.out, older_than=None)
        self.pending, self.since = {}, time.monotonic()


def input_name(o: PreprocessOptions) -> str:
    return o.manifest or o.msrvtt or o.videos


def read_inputs(o: PreprocessOptions) -> Inputs:
    """The options checked, the inputs read and checked, and the stores they name reachable."""
    check_options(o)
    try:
        batches = ([read_msrvtt(o.msrvtt, o.videos)] if o.msrvtt else read_manifest(o.manifest) if o.manifest
                   else read_folder(o.videos))
        inputs = collect_inputs(batches, o.splits)
    except InputError as e:
        raise OptionsError(str(e)) from None
    if not inputs.rows.num_rows and not inputs.failures:
        raise OptionsError(f"{input_name(o)} lists no videos")
    for split in o.splits or ():
        if split not in inputs.splits:
            raise OptionsError(f"split {split!r} has no videos in the inputs (they have: "
                               f"{', '.join(sorted(inputs.splits)) or 'none'})")
    _check_stores(list(inputs.buckets.values()))
    return inputs


def _check_same_shape(out: Location, o: PreprocessOptions, finished: set[str]) -> None:
    """Refuse options that differ from those of the shards already finished in `out`; while no shard is
    finished (a first run stopped early), the new options and inputs simply replace the recorded plan."""
    loc = out.child(CATALOG_DIR, OPTIONS)
    if not loc.exists() or not finished:
        forget_plans(out)   # nothing finished yet: plan again from these inputs and options
        loc.write_atomic(json.dumps(o.shape(), indent=2).encode())
        return
    before = json.loads(loc.read_text())
    changed = {k: (before.get(k), v) for k, v in o.shape().items() if before.get(k) != v}
    if changed:
        what = ", ".join(f"{k}={old} (now {new})" for k, (old, new) in changed.items())
        raise OptionsError(f"{out.uri} was written with {what}; use the same options to resume, "
                           "or a new --out")


def closing_lines(r: PreprocessReport) -> list[str]:
    by = r.decoded_by
    lines = [f"preprocess: finished in {r.seconds:.1f} s: decoded {r.processed} videos at {r.rate:.2f} videos/s "
             f"({by.get('seek', 0)} samples by seeking to the kept frames, {by.get('sequential', 0)} decoding "
             "all frames), "
             f"{r.resumed} were already done, {r.removed} removed"]
    for split, s in r.summary["splits"].items():
        lines.append(f"  {split}: {s['samples']} videos in {s['shards']} shards, {s['frames']} frames, "
                     f"{s['bytes'] / 1e6:.1f} MB, {s['failures']} failed")
    lines.append(f"  shards, _summary.json and _failures.csv in {r.out}")
    for shard, why in r.shards_unwritten.items():
        lines.append(f"  {shard} could not be written ({why}); run the job again to write it")
    if r.failures:
        lines.append(f"  {len(r.failures)} inputs failed, e.g. {r.failures[0].input}: {r.failures[0].error}")
    return lines
