"""The videos to preprocess: read from the MSR-VTT layout, a plain manifest or a folder of videos, in batches,
checked row by row.

A manifest is read a batch at a time (Arrow's CSV and Parquet readers, JSON lines one by one), so its length
never decides the memory it takes. Only the video column is required: an id left out is the video's path as
the manifest gives it (relative to the manifest, so it stays the same from run to run), a split left out is
`corpus` (embedded and searched, never trained or evaluated on), and captions are optional there. A folder
(`read_folder`) is a manifest of the video files under it. `validate` turns a batch into a table of good rows
and one `Failure` (stage "source") per bad row (no captions in a captioned split, captions that are not
text, an unknown split), so a bad row is recorded and the rest go on; rows that are plainly right are checked
as whole columns. Only a problem with the whole input (a missing file, no video column) raises `InputError`.
Ids given twice are found across batches, by `inputs`.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import posixpath
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from pipelines.shards.format import CORPUS, KNOWN_SPLITS
from pipelines.storage.location import Location, resolve_against
from tempme.errors import UserError

MSRVTT_DATA = "MSRVTT_data.json"
MSRVTT_TRAIN = "MSRVTT_train.9k.csv"
MSRVTT_TEST = "MSRVTT_JSFUSION_test.csv"

# manifest column -> accepted header names, first match wins; only the video column is required
MANIFEST_COLUMNS = {
    "video": ("video", "path", "uri", "video_path"),
    "id": ("id", "video_id"),
    "captions": ("captions", "caption"),
    "split": ("split",),
}


BATCH_ROWS = 65_536    # manifest rows read, checked and spooled at a time
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".3gp", ".ogv")   # the files a folder of videos is walked for

# The good rows of the inputs, as planning holds them (spooled to a local file) and plan files repeat them.
INPUT_SCHEMA = pa.schema([("id", pa.string()), ("uri", pa.string()), ("captions", pa.list_(pa.string())),
                          ("split", pa.string()), ("origin", pa.string())])


class InputError(UserError):
    """The input as a whole cannot be read (as opposed to one bad row, which is a `Failure`)."""


@dataclass(frozen=True)
class VideoInput:
    id: str
    uri: str                   # local path or object-store URI of the video file
    captions: tuple[str, ...]
    split: str
    origin: str                # where it was listed, for messages: "manifest.csv row 4"


@dataclass(frozen=True)
class Failure:
    """One row of the failure table."""

    input: str                 # the video path/URI, or the origin when there is none
    id: str
    split: str
    stage: str                 # source | read | decode | encode
    error: str


@dataclass(frozen=True)
class RawRow:
    id: Any
    uri: Any
    captions: Any
    split: Any
    origin: str
    problem: str | None = None  # set by a reader that could not parse the row at all


@dataclass(frozen=True)
class ArrowRows:
    """Manifest rows `first`.. as the file types them, in columns named video, id, captions, split."""

    columns: pa.RecordBatch
    name: str                  # the manifest's file name, for origins ("manifest.csv row 4")
    first: int                 # the row number of the first row, from 1
    base: Location             # the folder relative video paths start from


Rows = ArrowRows | list[RawRow]   # a batch of inputs: typed columns, or rows parsed one by one


def read_msrvtt(annotations: str, videos: str) -> list[RawRow]:
    """9k train (captions from MSRVTT_data.json) and 1k-A test (one caption each, from the JSFUSION csv)."""
    root = Location.of(annotations)
    files = {name: root.child(name) for name in (MSRVTT_DATA, MSRVTT_TRAIN, MSRVTT_TEST)}
    missing = [loc.uri for loc in files.values() if not loc.exists()]
    if missing:
        raise InputError(f"MSR-VTT annotations incomplete: missing {', '.join(missing)}")
    try:
        sentences = json.loads(files[MSRVTT_DATA].read_text())["sentences"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{files[MSRVTT_DATA].uri}: not an MSR-VTT annotation file ({e})") from None
    by_video: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for n, s in enumerate(sentences):
        by_video[str(s.get("video_id"))].append((s.get("sen_id") if isinstance(s.get("sen_id"), int) else n,
                                                 s.get("caption")))
    folder = Location.of(videos)
    rows = []
    for origin, rec in _read_csv(files[MSRVTT_TRAIN], required=("video_id",))[1]:
        vid = rec["video_id"]
        captions = [c for _, c in sorted(by_video.get(vid, []), key=lambda p: p[0])]
        rows.append(RawRow(vid, folder.child(f"{vid}.mp4").uri, captions, "train", origin))
    for origin, rec in _read_csv(files[MSRVTT_TEST], required=("video_id", "sentence"))[1]:
        vid = rec["video_id"]
        rows.append(RawRow(vid, folder.child(f"{vid}.mp4").uri, [rec["sentence"]], "test", origin))
    return rows


def read_manifest(manifest: str, batch_rows: int | None = None) -> Iterator[Rows]:
    """CSV, JSONL or Parquet with columns video (path/URI, relative to the manifest), id, captions, split,
    as batches of at most `batch_rows` rows (default BATCH_ROWS). The file and its columns are checked at once
    (`InputError`); the rows are read as the batches are asked for, so a manifest of any length takes one
    batch of memory.

    Captions: a list (JSONL/Parquet), or in CSV either a JSON list ('["a", "b"]') or one caption.
    """
    loc = Location.of(manifest)
    if not loc.exists():
        raise InputError(f"manifest {loc.uri} does not exist")
    batch_rows = batch_rows or BATCH_ROWS
    kind = os.path.splitext(loc.path)[1].lower()
    if kind == ".csv":
        return _csv_batches(loc, batch_rows)
    if kind in (".jsonl", ".ndjson"):
        return _jsonl_batches(loc, batch_rows)
    if kind == ".parquet":
        file = pq.ParquetFile(loc.fs.open_input_file(loc.path))
        columns = _manifest_columns(loc.uri, set(file.schema_arrow.names))
        batches = file.iter_batches(batch_size=batch_rows, columns=[c for c in dict.fromkeys(columns.values()) if c])
        return _numbered(loc, columns, batches)
    raise InputError(f"manifest {loc.uri}: unknown format {kind!r} (use .csv, .jsonl or .parquet)")


def _csv_batches(loc: Location, batch_rows: int) -> Iterator[Rows]:
    """Every column read as text (a CSV has no types); records may span lines inside quotes."""
    def reader(types: dict | None = None):
        return pacsv.open_csv(loc.fs.open_input_stream(loc.path),
                              read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 256)),
                              parse_options=pacsv.ParseOptions(newlines_in_values=True),
                              convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False))
    header = reader().schema.names
    columns = _manifest_columns(loc.uri, set(header))
    return _numbered(loc, columns, _rebatched(reader({name: pa.string() for name in header}), batch_rows))


def _rebatched(reader: pa.RecordBatchReader, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def _numbered(loc: Location, columns: dict[str, str | None], batches: Iterator[pa.RecordBatch]
              ) -> Iterator[ArrowRows]:
    first = 1
    for batch in batches:
        yield ArrowRows(_with_defaults(batch, columns), loc.name, first, loc.parent())
        first += batch.num_rows


def _with_defaults(batch: pa.RecordBatch, columns: dict[str, str | None]) -> pa.RecordBatch:
    """The batch as columns video, id, captions, split; an id left out (no column, null or empty) is the video
    as given, a split left out is `corpus`, captions left out are null."""
    n = batch.num_rows
    def column(name: str, kind: pa.DataType) -> pa.Array:
        return batch.column(columns[name]) if columns[name] else pa.nulls(n, kind)
    video = column("video", pa.string())
    return pa.RecordBatch.from_arrays(
        [video, _or_default(column("id", pa.string()), video), column("captions", pa.list_(pa.string())),
         _or_default(column("split", pa.string()), pa.array([CORPUS] * n))], names=list(MANIFEST_COLUMNS))


def _or_default(values: pa.Array, default: pa.Array) -> pa.Array:
    """`default` where `values` is null or empty text; values of other types are left for `validate` to name."""
    if pa.types.is_null(values.type) and pa.types.is_string(default.type):
        return default
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) \
            or not pa.types.is_string(default.type):
        return values
    values = values.cast(pa.string())
    missing = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
    return pc.if_else(missing, default, values)


def read_folder(folder: str, batch_rows: int | None = None) -> Iterator[ArrowRows]:
    """The video files under `folder` (a local folder or an object-store prefix, walked a folder at a time) as
    manifest rows of a video column alone: ids are their paths relative to `folder`, split `corpus`."""
    root = Location.of(folder)
    batch_rows = batch_rows or BATCH_ROWS

    def paths() -> Iterator[str]:
        pending = [""]
        while pending:
            relative = pending.pop()
            here = root.child(relative) if relative else root
            for info in sorted(here.fs.get_file_info(pafs.FileSelector(here.path, recursive=False)),
                               key=lambda i: i.path, reverse=True):
                name = posixpath.join(relative, info.base_name) if relative else info.base_name
                if info.type == pafs.FileType.Directory:
                    pending.append(name)
                elif info.base_name.lower().endswith(VIDEO_SUFFIXES) and not info.base_name.startswith("."):
                    yield name

    def batches() -> Iterator[pa.RecordBatch]:
        chunk = []
        for name in paths():
            chunk.append(name)
            if len(chunk) == batch_rows:
                yield pa.record_batch([pa.array(chunk, pa.string())], names=["video"])
                chunk = []
        if chunk:
            yield pa.record_batch([pa.array(chunk, pa.string())], names=["video"])

    columns = {"video": "video", "id": None, "captions": None, "split": None}
    listing = root.child("")    # relative paths resolve against the folder itself
    first = 1
    for batch in batches():
        yield ArrowRows(_with_defaults(batch, columns), root.name + "/", first, listing)
        first += batch.num_rows


def _jsonl_batches(loc: Location, batch_rows: int) -> Iterator[list[RawRow]]:
    """JSON lines are parsed one by one in Python: a line that is not a JSON object is one bad row, and values
    of any type reach `validate` as they are (a number where text belongs is named, not coerced). The column
    names are those of the first JSON object."""
    records = _read_jsonl(loc)
    ahead: list[tuple[str, dict | str]] = []
    for origin, rec in records:
        ahead.append((origin, rec))
        if isinstance(rec, dict):
            break
    firsts = [rec for _, rec in ahead if isinstance(rec, dict)]
    columns = _manifest_columns(loc.uri, set(firsts[0]) if firsts else set()) if ahead else {}
    base = loc.parent()

    def batches() -> Iterator[list[RawRow]]:
        rows: list[RawRow] = []
        for origin, rec in itertools.chain(ahead, records):
            if isinstance(rec, str):  # a line the reader could not parse; rec says why
                rows.append(RawRow(None, None, None, None, origin, problem=rec))
            else:
                video = rec.get(columns["video"])
                uri = resolve_against(base, video) if isinstance(video, str) and video.strip() else video
                vid, split = (rec.get(columns[c]) if columns[c] else None for c in ("id", "split"))
                rows.append(RawRow(video if _left_out(vid) else vid, uri,
                                   rec.get(columns["captions"]) if columns["captions"] else None,
                                   CORPUS if _left_out(split) else split, origin))
            if len(rows) == batch_rows:
                yield rows
                rows = []
        if rows:
            yield rows
    return batches()


def validate(rows: Rows) -> tuple[pa.Table, list[Failure]]:
    """One batch of rows checked: (the good ones as an `INPUT_SCHEMA` table in the batch's order, one failure
    per bad row naming what is wrong with it). Ids given twice are found later, across batches (`inputs`)."""
    if isinstance(rows, ArrowRows):
        return _validate_columns(rows)
    checked, failures = _check_rows(rows)
    return pa.Table.from_pylist([r for r in checked if r is not None], schema=INPUT_SCHEMA), failures


def _check_rows(rows: list[RawRow]) -> tuple[list[dict | None], list[Failure]]:
    """Row by row: each good row as a dict of `INPUT_SCHEMA` (None for a bad one), and the failures."""
    checked: list[dict | None] = []
    failures: list[Failure] = []
    for row in rows:
        vid = _text_id(row.id)
        uri = row.uri if isinstance(row.uri, str) and row.uri.strip() else None
        split = row.split if isinstance(row.split, str) else None
        problem = _row_problem(row, vid, uri, split)
        if problem is not None:
            failures.append(Failure(uri or row.origin, vid or "", split or "", "source", f"{row.origin}: {problem}"))
            checked.append(None)
            continue
        captions = _caption_list(row.captions, optional=split == CORPUS)
        checked.append({"id": vid, "uri": uri, "captions": [c.strip() for c in captions],
                        "split": split, "origin": row.origin})
    return checked, failures


def _validate_columns(rows: ArrowRows) -> tuple[pa.Table, list[Failure]]:
    """Rows that are plainly right are checked and shaped as whole columns; the rest (a problem, or a CSV
    caption that is a JSON list) go through the row-by-row check, which names the problem."""
    b, n = rows.columns, rows.columns.num_rows
    ids, id_ok = _id_column(b.column("id"))
    uris, uri_ok = _uri_column(b.column("video"), rows.base)
    split = b.column("split")
    split_ok = (pc.is_in(split, value_set=pa.array(KNOWN_SPLITS)) if pa.types.is_string(split.type)
                else pa.nulls(n, pa.bool_()))
    corpus = (pc.fill_null(pc.equal(split, CORPUS), False).to_numpy(zero_copy_only=False)
              if pa.types.is_string(split.type) else np.zeros(n, bool))
    captions, captions_ok = _caption_column(b.column("captions"), n, optional=corpus)
    ok = pc.fill_null(pc.and_kleene(pc.and_kleene(id_ok, uri_ok), pc.and_kleene(captions_ok, split_ok)), False)
    numbers = pa.array(np.arange(rows.first, rows.first + n))
    origins = pc.binary_join_element_wise(f"{rows.name} row ", pc.cast(numbers, pa.string()), "")
    good = pa.table([ids, uris, captions, split.cast(pa.string()) if pa.types.is_string(split.type)
                     else pa.nulls(n, pa.string()), origins], schema=INPUT_SCHEMA).filter(ok)
    if pc.all(ok).as_py() in (True, None):
        return good, []
    bad = pc.invert(ok)
    rest = [RawRow(r["id"], resolve_against(rows.base, r["video"]) if isinstance(r["video"], str)
                   and r["video"].strip() else r["video"], r["captions"], r["split"], origin)
            for r, origin in zip(b.filter(bad).to_pylist(), origins.filter(bad).to_pylist())]
    checked, failures = _check_rows(rest)
    passed = np.array([r is not None for r in checked], bool)
    if not passed.any():
        return good, failures
    more = pa.Table.from_pylist([r for r in checked if r is not None], schema=INPUT_SCHEMA)
    where = np.concatenate([np.flatnonzero(ok.to_numpy(zero_copy_only=False)),
                            np.flatnonzero(bad.to_numpy(zero_copy_only=False))[passed]])
    return pa.concat_tables([good, more]).take(np.argsort(where, kind="stable")), failures


def _id_column(column: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(ids as text, which are usable): text trimmed, whole numbers written out; other types fail per row."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        ids = pc.utf8_trim_whitespace(column.cast(pa.string()))
        return ids, pc.greater(pc.utf8_length(ids), 0)
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.string()), pc.is_valid(column)
    return pa.nulls(len(column), pa.string()), pa.nulls(len(column), pa.bool_())


def _uri_column(column: pa.Array, base: Location) -> tuple[pa.Array, pa.Array]:
    """Video paths resolved against the manifest's folder, as `resolve_against` does one at a time."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return pa.nulls(len(column), pa.string()), pa.nulls(len(column), pa.bool_())
    column = column.cast(pa.string())
    absolute = pc.or_(pc.match_substring(column, "://"), pc.starts_with(column, "/"))
    uris = pc.if_else(absolute, column, pc.binary_join_element_wise(base.child("").uri, column, ""))
    return uris, pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)


def _caption_column(column: pa.Array, n: int, optional: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """(captions as lists of trimmed text, which rows are plainly right): a list of text with no empty caption,
    or in CSV one caption that does not look like a JSON list; at least one, unless the row is `optional`."""
    kind = column.type
    if pa.types.is_null(kind):
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string())), \
            pa.array(optional)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.fill_null(pc.utf8_trim_whitespace(column.cast(pa.string())), "")
        present = pc.greater(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
        offsets = pa.array(np.concatenate([[0], np.cumsum(present)]).astype(np.int32))
        ok = (present & ~pc.starts_with(text, "[").to_numpy(zero_copy_only=False)) | (~present & optional)
        return pa.ListArray.from_arrays(offsets, text.filter(pa.array(present))), pa.array(ok)
    if not ((pa.types.is_list(kind) or pa.types.is_large_list(kind))
            and (pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type))):
        return pa.nulls(n, pa.list_(pa.string())), pa.nulls(n, pa.bool_())
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
    text = pc.utf8_trim_whitespace(pc.list_flatten(column).cast(pa.string()))
    empty = pc.fill_null(pc.equal(pc.utf8_length(text), 0), True).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(column).to_numpy()
    bad_captions = np.bincount(parents[empty], minlength=n) if len(parents) else np.zeros(n, np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    given = pc.is_valid(column).to_numpy(zero_copy_only=False)
    ok = pa.array((((lengths > 0) & given) | optional) & (bad_captions == 0))
    return pa.ListArray.from_arrays(offsets, text), ok


def _row_problem(row: RawRow, vid: str | None, uri: str | None, split: str | None) -> str | None:
    if row.problem is not None:
        return row.problem
    if not vid:
        return f"id missing or not text ({row.id!r})"
    if uri is None:
        return f"video path missing ({row.uri!r})"
    if split not in KNOWN_SPLITS:
        return f"unknown split {row.split!r} (known: {', '.join(KNOWN_SPLITS)})"
    captions = _caption_list(row.captions, optional=split == CORPUS)
    if captions is None:
        return f"captions are not text or a list of text ({_short(row.captions)})"
    if not captions and split != CORPUS:
        return f"no captions (a {split} video needs one; leave the split out for a video only searched)"
    for n, caption in enumerate(captions, start=1):
        if not isinstance(caption, str):
            return f"caption {n} of {len(captions)} is not text ({_short(caption)})"
        if not caption.strip():
            return f"caption {n} of {len(captions)} is empty"
    return None


def _caption_list(value: Any, optional: bool = False) -> list | None:
    if (optional and value is None) or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                return [value]
            return parsed if isinstance(parsed, list) else None
        return [value]
    return None


def _text_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


def _read_csv(loc: Location, required: tuple[str, ...]) -> tuple[set[str], list[tuple[str, dict]]]:
    reader = csv.DictReader(io.StringIO(loc.read_bytes().decode("utf-8-sig"), newline=""))
    header = list(reader.fieldnames or [])
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{loc.uri}: missing column(s) {', '.join(missing)} (has {', '.join(header) or 'none'})")
    return set(header), [(f"{loc.name} row {n}", rec) for n, rec in enumerate(reader, start=1)]


def _read_jsonl(loc: Location) -> Iterator[tuple[str, dict | str]]:
    """(origin, record), streamed line by line; a line that is not a JSON object yields (origin, why)."""
    with io.TextIOWrapper(loc.fs.open_input_stream(loc.path), encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            origin = f"{loc.name} line {n}"
            try:
                rec = json.loads(line)
            except ValueError as e:
                yield origin, f"not JSON ({e})"
                continue
            yield origin, rec if isinstance(rec, dict) else f"not a JSON object ({_short(rec)})"


def _manifest_columns(uri: str, present: set[str]) -> dict[str, str | None]:
    """Which header holds each column (None: left out); only the video column is required."""
    columns = {column: next((n for n in names if n in present), None) for column, names in MANIFEST_COLUMNS.items()}
    if columns["video"] is None:
        names = MANIFEST_COLUMNS["video"]
        raise InputError(f"manifest {uri}: no video column (one of {', '.join(names)}); "
                         f"columns: {', '.join(sorted(present)) or 'none'}")
    return columns


def _left_out(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
