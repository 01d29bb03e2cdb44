"""The videos to preprocess: read from the MSR-VTT layout or a plain manifest, checked row by row.

Both readers yield raw rows; `validate` turns them into `VideoInput`s and `Failure`s (stage "source"), so a
bad row (no captions, captions that are not text, an unknown split, an id already given) is recorded and
the rest go on. Only a problem with the whole input (a missing file, a missing column) raises `InputError`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from pipelines.shard_format import KNOWN_SPLITS
from pipelines.storage import Location, resolve_against
from tempme.errors import UserError

MSRVTT_DATA = "MSRVTT_data.json"
MSRVTT_TRAIN = "MSRVTT_train.9k.csv"
MSRVTT_TEST = "MSRVTT_JSFUSION_test.csv"

# manifest column -> accepted header names, first match wins
MANIFEST_COLUMNS = {
    "video": ("video", "path", "uri", "video_path"),
    "id": ("id", "video_id"),
    "captions": ("captions", "caption"),
    "split": ("split",),
}


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


def read_manifest(manifest: str) -> list[RawRow]:
    """CSV, JSONL or Parquet with columns video (path/URI, relative to the manifest), id, captions, split.

    Captions: a list (JSONL/Parquet), or in CSV either a JSON list ('["a", "b"]') or one caption.
    """
    loc = Location.of(manifest)
    if not loc.exists():
        raise InputError(f"manifest {loc.uri} does not exist")
    header, records = _read_records(loc)
    columns = _manifest_columns(loc.uri, header)
    base = loc.parent()
    rows = []
    for origin, rec in records:
        if isinstance(rec, str):  # a line the reader could not parse; rec says why
            rows.append(RawRow(None, None, None, None, origin, problem=rec))
            continue
        video = rec.get(columns["video"])
        uri = resolve_against(base, video) if isinstance(video, str) and video.strip() else video
        rows.append(RawRow(rec.get(columns["id"]), uri, rec.get(columns["captions"]), rec.get(columns["split"]), origin))
    return rows


def _read_records(loc: Location) -> tuple[set[str], list[tuple[str, dict | str]]]:
    """(column names, [(origin, record or why it could not be read)]) of a manifest."""
    kind = os.path.splitext(loc.path)[1].lower()
    if kind == ".csv":
        return _read_csv(loc, required=())
    if kind in (".jsonl", ".ndjson"):
        records = list(_read_jsonl(loc))
        return set().union(*(r.keys() for _, r in records if isinstance(r, dict))), records
    if kind == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(loc.path, filesystem=loc.fs)
        return set(table.column_names), [(f"{loc.name} row {i}", r) for i, r in enumerate(table.to_pylist(), 1)]
    raise InputError(f"manifest {loc.uri}: unknown format {kind!r} (use .csv, .jsonl or .parquet)")


def validate(rows: Iterable[RawRow]) -> tuple[list[VideoInput], list[Failure]]:
    """Good rows become inputs; each bad row becomes one failure naming what is wrong with it."""
    inputs: list[VideoInput] = []
    failures: list[Failure] = []
    first_seen: dict[str, str] = {}
    for row in rows:
        vid = _text_id(row.id)
        uri = row.uri if isinstance(row.uri, str) and row.uri.strip() else None
        split = row.split if isinstance(row.split, str) else None
        problem = _row_problem(row, vid, uri, split)
        if problem is None and vid in first_seen:
            problem = f"duplicate id {vid!r} (first given at {first_seen[vid]})"
        if problem is not None:
            failures.append(Failure(uri or row.origin, vid or "", split or "", "source", f"{row.origin}: {problem}"))
            continue
        first_seen[vid] = row.origin
        inputs.append(VideoInput(vid, uri, tuple(c.strip() for c in _caption_list(row.captions)), split, row.origin))
    return inputs, failures


def _row_problem(row: RawRow, vid: str | None, uri: str | None, split: str | None) -> str | None:
    if row.problem is not None:
        return row.problem
    if not vid:
        return f"id missing or not text ({row.id!r})"
    if uri is None:
        return f"video path missing ({row.uri!r})"
    if split not in KNOWN_SPLITS:
        return f"unknown split {row.split!r} (known: {', '.join(KNOWN_SPLITS)})"
    captions = _caption_list(row.captions)
    if captions is None:
        return f"captions are not text or a list of text ({_short(row.captions)})"
    if not captions:
        return "no captions"
    for n, caption in enumerate(captions, start=1):
        if not isinstance(caption, str):
            return f"caption {n} of {len(captions)} is not text ({_short(caption)})"
        if not caption.strip():
            return f"caption {n} of {len(captions)} is empty"
    return None


def _caption_list(value: Any) -> list | None:
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


def _read_jsonl(loc: Location) -> Iterable[tuple[str, dict | str]]:
    """(origin, record); a line that is not a JSON object yields (origin, why) instead of stopping."""
    for n, line in enumerate(loc.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{loc.name} line {n}"
        try:
            rec = json.loads(line)
        except ValueError as e:
            yield origin, f"not JSON ({e})"
            continue
        yield origin, rec if isinstance(rec, dict) else f"not a JSON object ({_short(rec)})"


def _manifest_columns(uri: str, present: set[str]) -> dict[str, str]:
    columns = {}
    for column, names in MANIFEST_COLUMNS.items():
        found = next((n for n in names if n in present), None)
        if found is None:
            raise InputError(f"manifest {uri}: no {column} column (one of {', '.join(names)}); "
                             f"columns: {', '.join(sorted(present)) or 'none'}")
        columns[column] = found
    return columns
