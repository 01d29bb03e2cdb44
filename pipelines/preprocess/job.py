"""The preprocessing job: inputs -> plan -> decode on Ray Data -> shards, resumable at shard granularity.

Decoding is a Ray Data `map` over one row per video (stateless tasks over blocks of a few videos,
`decoders` at a time, one CPU and one ffmpeg thread each); rows come back to the driver, which writes a
shard as soon as all its videos are in (writing is cheap next to decoding: the decoders hand over finished
tar bytes). A shard is the unit of work: finished shards are skipped by a re-run, and a killed run loses at most
the shards it had not finished.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from pipelines.preprocess.layout import INDEX_DIR, OPTIONS
from pipelines.preprocess.plan import ShardPlan, plan_shards
from pipelines.preprocess.sample import DecodeSettings, make_sample
from pipelines.preprocess.sources import (KNOWN_SPLITS, Failure, InputError, read_manifest, read_msrvtt,
                                          validate)
from pipelines.preprocess.summary import all_failures, build_summary, write_report
from pipelines.preprocess.writer import ResumeError, finished_index, remove_unfinished, write_shard
from pipelines.progress import Progress
from pipelines.storage import Location

BLOCKS_PER_DECODER = 4   # enough blocks (tasks) to balance the decoders' loads at the end of the run,
VIDEOS_PER_BLOCK = 16    # few enough that Ray's per-task cost stays small next to decoding


class OptionsError(ValueError):
    """Options that cannot work, found before any video is touched."""


@dataclass
class PreprocessOptions:
    out: str
    msrvtt: str | None = None          # folder with MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv
    videos: str | None = None          # folder of {video_id}.mp4 (with msrvtt)
    manifest: str | None = None        # CSV / JSONL / Parquet: video, id, captions, split
    frames: int = 12
    fps: float = 1.0
    resolution: int = 224
    quality: int = 90
    samples_per_shard: int = 256
    decoders: int | None = None        # parallel decoders; None: one per CPU of the Ray cluster
    splits: tuple[str, ...] | None = None
    timeout: float = 600.0             # seconds one video may take
    progress_every: float = 10.0       # seconds between progress lines
    ray_address: str | None = None     # None: RAY_ADDRESS, else a local Ray started here

    def shape(self) -> dict:
        """The options that decide what the shards hold; a resumed job must use the same."""
        return {k: getattr(self, k) for k in ("frames", "fps", "resolution", "quality", "samples_per_shard")}


@dataclass
class PreprocessReport:
    out: str
    summary: dict
    failures: list[Failure]
    resumed: int = 0                   # videos already in shards finished by an earlier run
    processed: int = 0                 # videos decoded by this run
    rate: float = 0.0                  # videos/s while decoding (Ray start-up excluded)
    seconds: float = 0.0               # the whole run
    shards_written: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def check_options(o: PreprocessOptions) -> None:
    """Raise OptionsError naming the first option that cannot work."""
    if bool(o.msrvtt) == bool(o.manifest):
        raise OptionsError("give exactly one input: --msrvtt DIR (with --videos DIR) or --manifest FILE")
    if o.msrvtt:
        if not o.videos:
            raise OptionsError("--msrvtt needs --videos DIR (the folder of {video_id}.mp4)")
        for flag, value in (("--msrvtt", o.msrvtt), ("--videos", o.videos)):
            if not Location.of(value).is_dir():
                raise OptionsError(f"{flag} {value}: no such folder")
    elif not Location.of(o.manifest).exists():
        raise OptionsError(f"--manifest {o.manifest}: no such file")
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
    unknown = [s for s in (o.splits or ()) if s not in KNOWN_SPLITS]
    if unknown:
        raise OptionsError(f"unknown split {unknown[0]!r} (known: {', '.join(KNOWN_SPLITS)})")
    out = Location.of(o.out)
    if out.exists() and not out.is_dir():
        raise OptionsError(f"--out {o.out} is a file, not a folder")


def run_preprocess(options: PreprocessOptions, log: Callable[[str], None] = print) -> PreprocessReport:
    """Make (or complete) the shards in `options.out`. Raises OptionsError before any work if it cannot."""
    started = time.monotonic()
    check_options(options)
    inputs, source_failures = _read_inputs(options)
    out = Location.of(options.out)
    out.child(INDEX_DIR).make_dirs()
    _check_same_shape(out, options)
    removed = remove_unfinished(out)
    plans = plan_shards(inputs, options.samples_per_shard)
    try:
        done = {p.name: finished_index(out, p) for p in plans}
    except ResumeError as e:
        raise OptionsError(str(e)) from None
    pending = [p for p in plans if done[p.name] is None]
    resumed = sum(len(p.videos) for p in plans if done[p.name] is not None)
    log(f"preprocess: {len(inputs)} videos in {len(plans)} shards, {len(source_failures)} rejected inputs; "
        f"{len(plans) - len(pending)} shards already done ({resumed} videos)"
        + (f", removed {removed} unfinished files" if removed else ""))
    progress = Progress("preprocess", sum(len(p.videos) for p in pending), options.progress_every, log)
    written = _decode_and_write(pending, options, out, progress) if pending else {}
    indexes = [done[p.name] or written[p.name] for p in plans]
    failures = all_failures(indexes, source_failures)
    summary = build_summary(indexes, failures, {**options.shape(), "input": options.manifest or options.msrvtt})
    write_report(out, summary, failures)
    report = PreprocessReport(out.uri, summary, failures, resumed, progress.done, progress.rate(),
                              time.monotonic() - started, sorted(written))
    for line in closing_lines(report):
        log(line)
    return report


def _read_inputs(o: PreprocessOptions) -> tuple[list, list[Failure]]:
    try:
        rows = read_msrvtt(o.msrvtt, o.videos) if o.msrvtt else read_manifest(o.manifest)
    except InputError as e:
        raise OptionsError(str(e)) from None
    if not rows:
        raise OptionsError(f"{o.manifest or o.msrvtt} lists no videos")
    inputs, failures = validate(rows)
    if o.splits:
        present = sorted({v.split for v in inputs})
        for split in o.splits:
            if split not in present:
                raise OptionsError(f"split {split!r} has no videos in the inputs (they have: "
                                   f"{', '.join(present) or 'none'})")
        inputs = [v for v in inputs if v.split in o.splits]
        failures = [f for f in failures if f.split in o.splits]
    return inputs, failures


def _check_same_shape(out: Location, o: PreprocessOptions) -> None:
    """Refuse options that differ from those of the shards already finished in `out`; while no shard is
    finished (a first run stopped early), the new options simply replace the recorded ones."""
    loc = out.child(INDEX_DIR, OPTIONS)
    finished = [x for x in out.child(INDEX_DIR).list("*.json") if x.name != OPTIONS]
    if not loc.exists() or not finished:
        loc.write_atomic(json.dumps(o.shape(), indent=2).encode())
        return
    before = json.loads(loc.read_text())
    changed = {k: (before.get(k), v) for k, v in o.shape().items() if before.get(k) != v}
    if changed:
        what = ", ".join(f"{k}={old} (now {new})" for k, (old, new) in changed.items())
        raise OptionsError(f"{out.uri} was written with {what}; use the same options to resume, "
                           "or a new --out")


def _decode_and_write(pending: list[ShardPlan], o: PreprocessOptions, out: Location,
                      progress: Progress) -> dict[str, dict]:
    import ray

    if not ray.is_initialized():
        ray.init(address=o.ray_address, logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = ctx.print_on_execution_start = False   # the job prints its own progress
    decoders = o.decoders or max(1, int(ray.cluster_resources().get("CPU", 1)))
    rows = [{"shard": p.name, "pos": i, "id": v.id, "uri": v.uri, "captions": list(v.captions),
             "split": v.split, "origin": v.origin}
            for p in pending for i, v in enumerate(p.videos)]
    settings = DecodeSettings(o.frames, o.fps, o.resolution, o.quality, o.timeout)
    per_block = min(max(len(rows) // (decoders * BLOCKS_PER_DECODER), 1), VIDEOS_PER_BLOCK)
    ds = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // per_block))
    ds = ds.map(make_sample, fn_kwargs={"settings": settings},
                compute=ray.data.TaskPoolStrategy(size=decoders), num_cpus=1)
    plans = {p.name: p for p in pending}
    arrived: dict[str, list[dict]] = defaultdict(list)
    written = {}
    progress.start()
    for row in ds.iter_rows():
        name = row["shard"]
        arrived[name].append(dict(row))
        progress.update(failed=int(bool(row["error"])))
        if len(arrived[name]) == len(plans[name].videos):
            written[name] = write_shard(out, plans[name], arrived.pop(name))
    return written


def closing_lines(r: PreprocessReport) -> list[str]:
    lines = [f"preprocess: finished in {r.seconds:.1f} s: decoded {r.processed} videos at {r.rate:.2f} videos/s, "
             f"{r.resumed} were already done"]
    for split, s in r.summary["splits"].items():
        lines.append(f"  {split}: {s['samples']} videos in {s['shards']} shards, {s['frames']} frames, "
                     f"{s['bytes'] / 1e6:.1f} MB, {s['failures']} failed")
    lines.append(f"  shards, _summary.json and _failures.csv in {r.out}")
    if r.failures:
        lines.append(f"  {len(r.failures)} inputs failed, e.g. {r.failures[0].input}: {r.failures[0].error}")
    return lines
