"""Local paths and object-store URIs (s3://, gs://, ...) behind one small interface over pyarrow filesystems.

Stages read inputs and write outputs through `Location`, so the same code serves a laptop folder and a
bucket. Writes that must never be seen half-done go through `write_atomic` (temporary name, then rename).
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import quote

import pyarrow as pa
from pyarrow import fs as pafs

TEMP_MARK = ".partial-"  # temporary files are hidden (leading dot) and carry this mark


@dataclass(frozen=True)
class Location:
    """A file or folder on some pyarrow filesystem; `uri` is what the user gave (used in messages)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def of(cls, uri: str | os.PathLike) -> "Location":
        text = os.fspath(uri)
        if "://" not in text:
            path = os.path.abspath(os.path.expanduser(text))
            return cls(pafs.LocalFileSystem(), path, path)
        fs, path = _filesystem(text)
        return cls(fs, path.rstrip("/"), text.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def child(self, *names: str) -> "Location":
        if self.is_local:
            path = os.path.join(self.path, *names)
            return Location(self.fs, path, path)
        return Location(self.fs, posixpath.join(self.path, *names), "/".join([self.uri, *names]))

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def make_dirs(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def list(self, pattern: str = "*") -> list["Location"]:
        """Direct children whose name matches `pattern` (fnmatch), sorted by name; [] if no folder."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        names = sorted(posixpath.basename(i.path) for i in infos)
        return [self.child(n) for n in names if fnmatch.fnmatchcase(n, pattern)]

    def delete(self) -> None:
        self.fs.delete_file(self.path)

    def temp_sibling(self) -> "Location":
        """A hidden name beside this one: same folder, so the final rename stays inside one directory."""
        parent = self.parent()
        return parent.child(f".{self.name}{TEMP_MARK}{uuid.uuid4().hex[:8]}")

    def parent(self) -> "Location":
        if self.is_local:
            path = os.path.dirname(self.path)
            return Location(self.fs, path, path)
        return Location(self.fs, posixpath.dirname(self.path), self.uri.rsplit("/", 1)[0])

    def write_atomic(self, data: bytes) -> None:
        """Readers see either the old file, nothing, or all of `data`, never a part of it."""
        tmp = self.temp_sibling()
        with tmp.fs.open_output_stream(tmp.path) as f:
            f.write(data)
        tmp.fs.move(tmp.path, self.path)

    @contextlib.contextmanager
    def local_file(self) -> Iterator[str]:
        """A local path holding this file's bytes (a download for object stores; ffmpeg needs to seek)."""
        if self.is_local:
            yield self.path
            return
        suffix = os.path.splitext(self.path)[1]
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            with self.fs.open_input_stream(self.path) as src:
                shutil.copyfileobj(src, tmp, length=1 << 20)
            tmp.flush()
            yield tmp.name


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a URI (s3://, gs://, hdfs://, file://; characters a URI may not hold, like
    spaces, are escaped first; existing %-escapes are kept), else fsspec's for the schemes pyarrow lacks (memory://, az://, ...)."""
    for candidate in (uri, quote(uri, safe=":/%")):
        try:
            return pafs.FileSystem.from_uri(candidate)
        except pa.ArrowInvalid as e:
            if "Unrecognized filesystem type" in str(e):
                break
            if candidate != uri:
                raise
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def resolve_against(base: Location, reference: str) -> str:
    """`reference` as given when absolute or a URI, else relative to the folder `base`."""
    if "://" in reference or os.path.isabs(reference):
        return reference
    return base.child(reference).uri
