"""Read the WebDataset shards that `tempme preprocess` writes: the contract between preprocessing and the
stages after it (training, evaluation, embedding).

Shard folder (local path or object-store URI)
---------------------------------------------
    train-000000.tar, train-000001.tar, ..., test-000000.tar   videos of a split sorted by id, in runs
    _samples.lance         the sample table: a row per planned video of each finished shard (its tar, the
                           byte span of its sample, frames, captions count, first frame), or why it failed
    _summary.json          {"splits": {split: {samples, shards, bytes, frames, captions, failures}}, ...}
    _failures.csv          input, id, split, stage, error: every input that gave no sample, and why
    _removed.parquet       id, split of videos that left the corpus: skipped by this reader
    _plans/                the preprocessing job's ledger (which video went into which shard)
The names and the sample table's schema are in `pipelines.shards.format`. Only finished shards have rows in
the sample table; this reader sees nothing else, and reads only the columns it needs. Names starting with
"_" or "." are skipped by `ray.data.read_webdataset(folder)`, and every tar is a plain ustar archive (`tar
tf` lists it). A folder written before the sample table is converted once by `tempme upgrade-shards`.

Sample format (one sample per video)
------------------------------------
The key is the video id when it is made of letters, digits, "_" and "-" only; otherwise every other
character (dots included) becomes "_" and a 10-hex-digit hash of the id is appended. Members:
    <key>.json      UTF-8 JSON metadata:
                      id          the video id (str, as given by the inputs)
                      split       "train" | "val" | "test"
                      source      the input video path or URI
                      captions    [str, ...], at least one, none empty
                      duration    seconds (the container's, else what was decoded)
                      fps         the source's frame rate (null when unknown)
                      width, height, codec   of the source video stream
                      sample_fps  the rate frames were taken at before sampling (1.0 by default)
                      frames      T, the number of frames a model gets (12 by default)
                      valid       how many frames are real (= T, or fewer for short videos)
                      timestamps  seconds from the start, one per real frame
                      resolution  frame side in pixels (224 by default)
    <key>.000.jpg ... <key>.{frames-1:03d}.jpg
                    T frames, RGB JPEG, resolution x resolution (short side scaled with bicubic
                    interpolation and centre-cropped, inside ffmpeg). The first `valid` are the sampled
                    frames in time order; the rest are black padding, stored so that every sample has the
                    same members (tools that build a table per member, like ray.data.read_webdataset,
                    need that).
Frames are taken at `sample_fps`, then T of them spread uniformly (as in the paper's code); a video with
fewer keeps them all. Its mask is True for the first `valid` frames and False for the padding, which this
reader fills with zeros after normalisation (as the paper's code does), not with the stored black frames.

Reading
-------
    from pipelines.shards.reader import SampleTable
    from pipelines.shards.stream import ShardStream, stream_batches

    table = SampleTable.build(["shards/"], "train")        # once per process: the split, column-wise
    stream = ShardStream(table, batch_size=32, mode="pairs", rank=rank, world_size=world_size,
                         lanes=2, augment=True, seed=0, epoch=epoch)
    for batch in stream_batches(stream, pin_memory=True):  # uint8 video [B,T,3,H,W], mask [B,T], caption, id
        video = frames.normalise(batch["video"].to(device, non_blocking=True), batch["mask"])

The readers take a sequence of shard folders (a corpus grown in several places; `shard_folders` parses the
comma-separated `--shards` value once, where it comes in); a video id may be in only one of them.
`SampleTable` holds a split's samples as numpy and Arrow columns (a few dozen bytes per video, read from the
sample table batch by batch), checked against the tar files it names: a missing or
truncated shard is an error listing them, or skipped and counted with `bad_shards="skip"`. `ShardStream`
(pipelines.shards.stream) reads whole runs of samples with one ranged read each, shuffles within windows and deals
out batches.

Lower level, for stages that schedule samples themselves (e.g. embedding with Ray Data): `sample_batches`
streams the sample table's columns of every folder, less the removed videos; `SampleReader().read(tar, start,
end)` returns (metadata, JPEG frames) with one ranged read; `pipelines.shards.frames` turns the frames into tensors.
This module imports neither torch nor the model, so that a driver planning over millions of videos stays
small.
"""
from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.options import comma_list
from pipelines.shards.format import (
    META_MEMBER,
    SAMPLE_FILTER,
    SUMMARY,
    frame_member,
    legacy_catalogs,
    read_removed,
    sample_table,
    split_filter,
    sql_text,
)
from pipelines.shards.id_set import IdSet, fingerprints
from pipelines.storage.location import Location
from tempme.errors import NotFound, UserError

BAD_SHARDS = ("error", "skip")
log = logging.getLogger(__name__)


class BadShards(UserError):
    """Shards that the sample table names but whose tar is missing or shorter than its samples need."""


class LegacyShards(UserError):
    """A shard folder written before the sample table."""


def shard_folders(text: str) -> tuple[str, ...]:
    """The folders a `--shards` value names: one, or several separated by commas. Parsed once, where the value
    comes in (an options record, the training config); the readers take the folders."""
    return comma_list(text)


def _given(folders: Sequence[str]) -> Sequence[str]:
    if isinstance(folders, str):
        raise TypeError(f"shard folders are a sequence of names, not the text {folders!r} (see shard_folders)")
    if not folders:
        raise UserError("no shard folder given")
    return folders


def samples_of(folder: Location):
    """The folder's sample table, pinned to its current version (None for a folder with no finished shard);
    a folder of the catalog era is refused with the command that converts it."""
    ds = sample_table(folder)
    if ds is None and legacy_catalogs(folder):
        raise LegacyShards(f"{folder.uri} was written by an older version (a catalog per shard, no sample "
                           f"table): convert it once with `tempme upgrade-shards {folder.uri}`")
    return ds


def sample_batches(folders: Sequence[str], columns: Sequence[str], split: str | None = None
                   ) -> Iterator[tuple[Location, pa.RecordBatch]]:
    """(folder, batch of `columns`) of the samples of `split` (default: every split) in every one of the shard
    `folders`, less the videos recorded as removed; one batch at a time, so a reader of millions of videos
    holds what it keeps, not the table."""
    wanted = list(dict.fromkeys(["id", *columns]))
    for folder in map(Location.of, _given(folders)):
        ds = samples_of(folder)
        if ds is None:
            continue
        removed = IdSet([read_removed(folder)["id"]])
        for batch in ds.to_batches(columns=wanted, filter=split_filter(split) if split else SAMPLE_FILTER):
            if len(removed):
                batch = batch.filter(pa.array(~removed.holds(fingerprints(batch["id"]))))
            if batch.num_rows:
                yield folder, batch.select(list(columns))


def current_thumbnail(tar: str, video_id: str) -> tuple[str, int, int] | None:
    """Where the first frame of `video_id` is now, for a reader that was told `tar` and found it gone (a
    compacted shard's old generation, deleted once retired): looked up in that tar's folder's sample table."""
    folder = Location.of(tar).parent()
    ds = samples_of(folder)
    if ds is None:
        return None
    rows = ds.to_table(columns=["shard", "thumb_offset", "thumb_size"],
                       filter=f"id = {sql_text(video_id)} AND {SAMPLE_FILTER}").to_pylist()
    return (folder.child(rows[-1]["shard"]).uri, rows[-1]["thumb_offset"], rows[-1]["thumb_size"]) if rows else None


@dataclass(frozen=True)
class SampleTable:
    """A split's samples as columns, each tar's samples a run of rows in offset order (row i is in tar
    `tars[shard[i]]`, bytes [start, end); tar t's rows are `first[t]` to `first[t] + count[t]`, tars named in
    name order): a few dozen bytes per video, so every training process can hold a corpus of millions, built
    once and shared by its epochs and DataLoader workers."""

    tars: tuple[str, ...]
    shard: np.ndarray       # int32 into `tars`
    start: np.ndarray       # int64 byte offsets of the sample's first tar header ...
    end: np.ndarray         # ... and of the end of its last member
    captions: np.ndarray    # int32 captions per video
    ids: pa.ChunkedArray    # video ids (strings)
    first: np.ndarray       # int64: the row where each tar's run begins ...
    count: np.ndarray       # ... and how many rows it has
    skipped: tuple[str, ...] = ()   # bad shards left out (bad_shards="skip")

    @classmethod
    def build(cls, folders: Sequence[str], split: str, bad_shards: str = "error") -> SampleTable:
        """Read from the sample tables of the shard `folders` in their scan order, where a shard's rows are one run (its
        worker appended them in one commit, in offset order), so no permutation of millions of rows is made."""
        if bad_shards not in BAD_SHARDS:
            raise UserError(f"bad_shards must be one of {', '.join(BAD_SHARDS)}, got {bad_shards!r}")
        tars: dict[str, int] = {}          # tar URI -> its number in order of appearance, one entry per shard
        places: dict[str, tuple] = {}      # tar URI -> (its folder's place among `folders`, its name)
        place_of: dict[str, int] = {}      # folder URI -> its place among `folders`
        shards = ",".join(_given(folders))   # how messages name them
        n = sum(ds.count_rows(split_filter(split)) for f in folders
                if (ds := samples_of(Location.of(f))) is not None)
        shard, start, end = np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64)
        captions, ids, rows = np.empty(n, np.int32), [], 0
        for folder, batch in sample_batches(folders, ["shard", "start", "end", "captions", "id"], split):
            names = pc.unique(batch["shard"])
            place = place_of.setdefault(folder.uri, len(place_of))
            uris = [folder.child(n).uri for n in names.to_pylist()]
            places.update({uri: (place, uri) for uri in uris})
            numbers = np.array([tars.setdefault(uri, len(tars)) for uri in uris], np.int32)
            stop = rows + batch.num_rows
            shard[rows:stop] = numbers[pc.index_in(batch["shard"], value_set=names).to_numpy()]
            start[rows:stop], end[rows:stop] = batch["start"].to_numpy(), batch["end"].to_numpy()
            captions[rows:stop] = batch["captions"].to_numpy()
            ids.append(pa.concat_arrays([batch["id"]]))   # a compact copy: the batch's buffers are much larger
            rows = stop
        if not rows:
            raise NotFound(f"{shards}: no finished shards of split {split!r} "
                           f"(is it the output folder of `tempme preprocess`?)")
        shard, start, end, captions = shard[:rows], start[:rows], end[:rows], captions[:rows]
        ids = pa.chunked_array(ids)
        if len(folders) > 1 and len(pc.unique(ids)) != len(ids):   # one folder's ledger keeps ids unique
            counts = pc.value_counts(ids)
            twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
            raise UserError(f"{shards}: video {twice!r} of split {split!r} is in more than one shard folder")
        runs = np.flatnonzero(np.diff(shard, prepend=-1))          # where a tar's run begins
        if len(runs) != len(tars) or np.any((np.diff(start) <= 0) & (np.diff(shard) == 0)):
            raise BadShards(f"{shards}: the sample table of split {split!r} does not hold each shard's samples "
                            "as one run in offset order; it was not written by `tempme preprocess`")
        names = list(tars)
        need = np.zeros(len(names), np.int64)
        np.maximum.at(need, shard, end)
        skipped = _check_tars(names, need, f"of split {split!r}", bad_shards)
        ordered = sorted(set(names) - set(skipped), key=places.get)   # tars: folders as given, then by name
        renumber = np.full(len(names), -1, np.int32)
        renumber[[tars[t] for t in ordered]] = np.arange(len(ordered), dtype=np.int32)
        lengths = np.diff(np.append(runs, rows))
        first, count = np.zeros(len(ordered), np.int64), np.zeros(len(ordered), np.int64)
        kept = renumber[shard[runs]] >= 0
        first[renumber[shard[runs]][kept]], count[renumber[shard[runs]][kept]] = runs[kept], lengths[kept]
        shard = renumber[shard]                              # skipped tars' rows are -1, in no run
        return cls(tuple(ordered), shard, start, end, captions, ids, first, count, tuple(skipped))

    def __len__(self) -> int:
        """Videos of the split (those of skipped tars not counted)."""
        return int(self.count.sum())

    @property
    def pairs(self) -> int:
        """(video, caption) pairs of the split."""
        return int(self.captions[self.shard >= 0].sum())

    def video_ids(self) -> list[str]:
        """The split's video ids, tar after tar in name order, each in offset order."""
        return self.ids.take(self.rows(np.arange(len(self.tars)))).to_pylist()

    def rows(self, tars: np.ndarray) -> np.ndarray:
        """The table rows of these tars (numbers into `tars`), tar after tar, each in offset order."""
        return np.concatenate([np.arange(self.first[t], self.first[t] + self.count[t]) for t in tars]
                              or [np.zeros(0, np.int64)])


@dataclass(frozen=True)
class SplitCount:
    """How many videos and (video, caption) pairs a split holds, counted as its columns stream by, with one
    entry per tar and none per video: what a driver planning over millions of videos needs (the step count, the
    checks), while each worker builds the `SampleTable` it reads. The same checks as `SampleTable.build`: the
    split exists, its tars are whole (or skipped and counted), a video is in one folder only."""

    videos: int
    pairs: int
    tars: int
    skipped: tuple[str, ...] = ()

    @classmethod
    def count(cls, folders: Sequence[str], split: str, bad_shards: str = "error") -> SplitCount:
        if bad_shards not in BAD_SHARDS:
            raise UserError(f"bad_shards must be one of {', '.join(BAD_SHARDS)}, got {bad_shards!r}")
        per_tar: dict[str, np.ndarray] = {}        # tar URI -> [videos, pairs, bytes its samples need]
        several = len(_given(folders)) > 1
        prints = []                                # 64 bits of each id, only to find one in two folders
        for folder, batch in sample_batches(folders, ["shard", "end", "captions", "id"], split):
            grouped = pa.table({"shard": batch["shard"], "end": batch["end"], "captions": batch["captions"]}
                               ).group_by("shard").aggregate([("end", "count"), ("captions", "sum"), ("end", "max")])
            for name, videos, pairs, need in zip(*(grouped[c].to_numpy(zero_copy_only=False) for c in
                                                    ("shard", "end_count", "captions_sum", "end_max"))):
                entry = per_tar.setdefault(folder.child(name).uri, np.zeros(3, np.int64))
                entry[:2] += (videos, pairs)
                entry[2] = max(entry[2], need)
            if several:
                prints.append(fingerprints(batch["id"])["a"])
        shards = ",".join(folders)
        if not per_tar:
            raise NotFound(f"{shards}: no finished shards of split {split!r} "
                           f"(is it the output folder of `tempme preprocess`?)")
        if several:
            _refuse_repeated_ids(folders, split, np.concatenate(prints))
        names = list(per_tar)
        totals = np.array(list(per_tar.values()))
        skipped = _check_tars(names, totals[:, 2], f"of split {split!r}", bad_shards)
        kept = ~np.isin(np.array(names, object), np.array(skipped, object))
        return cls(videos=int(totals[kept, 0].sum()), pairs=int(totals[kept, 1].sum()), tars=int(kept.sum()),
                   skipped=tuple(skipped))


def _refuse_repeated_ids(folders: Sequence[str], split: str, prints: np.ndarray) -> None:
    """An error naming a video of `split` that is in more than one of the shard `folders`; `prints` are 64 bits
    of every id's fingerprint (8 bytes a video), sorted here in place; a shared one is checked on the ids."""
    prints.sort()
    shared = prints[1:][prints[1:] == prints[:-1]]
    if not len(shared):
        return
    seen: set[str] = set()        # one folder holds an id once (its ledger), so a second sighting is another's
    for _, batch in sample_batches(folders, ["id"], split):
        for video in batch["id"].filter(pa.array(np.isin(fingerprints(batch["id"])["a"], shared))).to_pylist():
            if video in seen:
                raise UserError(f"{','.join(folders)}: video {video!r} of split {split!r} is in more than one "
                                "shard folder")
            seen.add(video)


def _check_tars(tars: list[str], need: np.ndarray, what: str, bad_shards: str) -> list[str]:
    """The bad tars skipped: every tar must exist and hold the bytes its samples need (`need`, one per tar; one
    listing per folder); a bad one is an error, or skipped with `bad_shards="skip"`."""
    sizes: dict[str, int] = {}
    for folder in {t.rsplit("/", 1)[0] for t in tars}:
        sizes.update({f"{folder}/{name}": size for name, size in Location.of(folder).sizes("*.tar").items()})
    bad = {}
    for i, tar in enumerate(tars):
        have = sizes.get(tar)
        if have is None:
            bad[tar] = f"{tar}: missing"
        elif have < need[i]:
            bad[tar] = f"{tar}: truncated ({have} of {need[i]} bytes)"
    if bad and bad_shards != "skip":
        raise BadShards(f"{len(bad)} bad shards {what}: " + "; ".join(list(bad.values())[:10])
                        + (" ..." if len(bad) > 10 else "") + " (re-run `tempme preprocess` on the folder to "
                        "write them again, or skip them: data.bad_shards=skip)")
    if bad:
        log.warning("skipping %d bad shards %s: %s", len(bad), what, "; ".join(list(bad.values())[:3]))
    return sorted(bad)


def read_summary(folders: Sequence[str]) -> dict:
    """The summary of the first of the shard `folders`."""
    return json.loads(Location.of(_given(folders)[0]).child(SUMMARY).read_text())


GAP = 1 << 20            # samples of a tar less than this apart are read in one request ...
MAX_RUN = 64 << 20       # ... of at most this many bytes


def neighbour_runs(tars: Sequence, starts: Sequence[int], ends: Sequence[int]) -> list[list[int]]:
    """The positions of samples (their tar, byte start and end) grouped into runs that one ranged read each
    fetches: the same tar, in byte order, each less than `GAP` bytes after the one before, `MAX_RUN` at most."""
    order = sorted(range(len(starts)), key=lambda i: (tars[i], starts[i]))
    runs: list[list[int]] = []
    for i in order:
        run = runs[-1] if runs else None
        if (run and tars[i] == tars[run[0]] and starts[i] - ends[run[-1]] <= GAP
                and ends[i] - starts[run[0]] <= MAX_RUN):
            run.append(i)
        else:
            runs.append([i])
    return runs


class SampleReader:
    """Reads samples (metadata, JPEG frames) by ranged reads, one per run of neighbouring samples; keeps each
    tar it opened open until `close()`. For stages that pick their own samples from the sample table (e.g.
    embedding). `requests` counts the ranged reads made."""

    def __init__(self):
        self._files: dict[str, object] = {}
        self.requests = 0

    def read(self, tar: str, start: int, end: int) -> tuple[dict, list[bytes]]:
        """(metadata dict, JPEG bytes of the `valid` real frames) of the sample at bytes [start, end) of `tar`."""
        return parse_sample(self._range(tar, start, end))

    def read_many(self, tars: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list:
        """Per sample, in the order given: (metadata, JPEGs), or the exception that reading it raised. A run
        whose read fails is read again sample by sample, so one bad range costs only its own samples."""
        out: list = [None] * len(starts)
        for run in neighbour_runs(tars, starts, ends):
            first, last = run[0], run[-1]
            try:
                blob = self._range(tars[first], starts[first], ends[last]) if len(run) > 1 else None
            except Exception:     # noqa: BLE001  (each sample's own read says what is wrong with it)
                blob = None
            for i in run:
                try:
                    out[i] = parse_sample(blob[starts[i] - starts[first]: ends[i] - starts[first]] if blob is not None
                                          else self._range(tars[i], starts[i], ends[i]))
                except Exception as e:   # noqa: BLE001  (recorded per sample by the caller)
                    out[i] = e
        return out

    def _range(self, tar: str, start: int, end: int) -> bytes:
        f = self._files.get(tar)
        if f is None:
            loc = Location.of(tar)
            f = self._files[tar] = loc.fs.open_input_file(loc.path)
        self.requests += 1
        return f.read_at(end - start, start)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def parse_sample(blob: bytes) -> tuple[dict, list[bytes]]:
    """(metadata, JPEG bytes of the `valid` real frames) from a sample's own tar bytes (its span)."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        for info in tar:
            members[info.name.split(".", 1)[1]] = tar.extractfile(info).read()
    meta = json.loads(members[META_MEMBER])
    return meta, [members[frame_member(i)] for i in range(int(meta["valid"]))]
