"""Local paths and object-store URIs (s3://, gs://, ...) behind one small interface over pyarrow filesystems.

Stages read inputs and write outputs through `Location`, so the same code serves a laptop folder and a
bucket. Writes that must never be seen half-done go through `write_atomic` or `put_file`: on a local disk a
temporary name, then a rename; on an object store a temporary object, checked whole, then copied to its final
name inside the store (an object store has no rename, and a cut upload must never appear under a final name).
Object stores are found through the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_REGION,
...), which pyarrow reads, so one command runs against AWS S3, MinIO or SeaweedFS alike. Their transient
errors are retried (`retrying`).
"""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import fsspec
import pyarrow as pa
from pyarrow import fs as pafs

from tempme.errors import UserError

TEMP_MARK = ".partial-"  # temporary files are hidden (leading dot) and carry this mark
SPOOL_DIR = "tempme-spool"   # under the system's temporary folder (`spool_dir`)
ATTEMPTS = 4             # tries of an object-store call before its error counts (each after the client's own)
FIRST_BACKOFF_S = 0.5    # doubled after every failed try
S3_ATTEMPTS = 12         # the S3 client's own tries (AWS standard back-off, up to 20 s apart): about a minute
LANCE_RETRIES = 30        # Lance's object-store client: tries of a request (back-off up to 15 s apart) ...
LANCE_RETRY_TIMEOUT_S = 300   # ... within this long
PERMANENT_ERRORS = ("AccessDenied", "Access Denied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "InvalidBucketName", "AuthorizationHeaderMalformed")
T = TypeVar("T")


class SpoolFull(Exception):
    """A download that would pass the local disk a task may use (its spool limit), or the disk's free space."""


class StoreError(UserError):
    """A folder or bucket that cannot be used at all (no such bucket, refused credentials)."""


def sql_text(text: str) -> str:
    """`text` as a quoted literal of a Lance filter."""
    return "'" + text.replace("'", "''") + "'"


def retrying(call: Callable[[], T], attempts: int = ATTEMPTS, backoff_s: float = FIRST_BACKOFF_S) -> T:
    """`call()`, tried again with exponential back-off on OSError (what pyarrow raises once the S3 client's
    own retries, `S3_ATTEMPTS`, are spent: an outage longer than they last); the last error is raised. A
    permanent error (a missing file, no such bucket, refused credentials) is raised at once."""
    for attempt in range(attempts):
        try:
            return call()
        except FileNotFoundError:
            raise
        except OSError as e:
            if attempt == attempts - 1 or is_permanent(e):
                raise
            time.sleep(backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


def is_permanent(error: OSError) -> bool:
    """Whether an object-store error will come back the same however often it is retried."""
    return any(code in str(error) for code in PERMANENT_ERRORS)


@dataclass(frozen=True)
class Location:
    """A file or folder on some pyarrow filesystem; `uri` is what the user gave (used in messages)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def of(cls, uri: str | os.PathLike) -> Location:
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

    def child(self, *names: str) -> Location:
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

    def open_ranged(self) -> pa.NativeFile:
        """This file for random access: on an object store each read is a ranged request, nothing is downloaded."""
        return retrying(lambda: self.fs.open_input_file(self.path))

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def list(self, pattern: str = "*") -> list[Location]:
        """Direct children whose name matches `pattern` (fnmatch), sorted by name; [] if no folder."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        names = sorted(posixpath.basename(i.path) for i in infos)
        return [self.child(n) for n in names if fnmatch.fnmatchcase(n, pattern)]

    def sizes(self, pattern: str = "*") -> dict[str, int]:
        """{name: bytes} of the direct children that are files matching `pattern`, from one listing."""
        if not retrying(self.is_dir):
            return {}
        infos = retrying(lambda: self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False)))
        return {posixpath.basename(i.path): i.size for i in infos
                if i.type == pafs.FileType.File and fnmatch.fnmatchcase(posixpath.basename(i.path), pattern)}

    def delete(self) -> None:
        self.fs.delete_file(self.path)

    def temp_sibling(self) -> Location:
        """A hidden name beside this one: same folder, so the final rename stays inside one directory."""
        parent = self.parent()
        return parent.child(f".{self.name}{TEMP_MARK}{uuid.uuid4().hex[:8]}")

    def parent(self) -> Location:
        if self.is_local:
            path = os.path.dirname(self.path)
            return Location(self.fs, path, path)
        return Location(self.fs, posixpath.dirname(self.path), self.uri.rsplit("/", 1)[0])

    def write_atomic(self, data: bytes) -> None:
        """Readers see either the old file, nothing, or all of `data`, never a part of it."""
        if not self.is_local:
            return self._publish(lambda tmp: tmp._write_once(data), len(data))
        tmp = self.temp_sibling()
        with tmp.fs.open_output_stream(tmp.path) as f:
            f.write(data)
        tmp.fs.move(tmp.path, self.path)

    def _write_once(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def _publish(self, upload: Callable[[Location], None], size: int) -> None:
        """Object stores: upload under a hidden temporary name, check that all of it arrived, then copy it to
        the final name (a copy inside the store, which appears whole or not at all) and drop the temporary.
        An upload cut short (pyarrow completes a multipart upload even when closed by an exception, as when
        a node is drained) is left under the temporary name, which the next run removes."""
        tmp = self.temp_sibling()
        retrying(lambda: upload(tmp))
        arrived = retrying(lambda: tmp.info().size)
        if arrived != size:
            raise OSError(f"the upload of {self.uri} was cut short: {arrived} of {size} bytes arrived")
        retrying(lambda: self.fs.copy_file(tmp.path, self.path))
        retrying(lambda: self.fs.delete_file(tmp.path))

    def put_file(self, local_path: str) -> None:
        """Copy the local file `local_path` here, as atomically as `write_atomic` (a multipart upload for
        large files on object stores, streamed, never the whole file in memory)."""
        if self.is_local:
            tmp = self.temp_sibling()
            shutil.copyfile(local_path, tmp.path)
            os.replace(tmp.path, self.path)
            return

        def upload(tmp: Location) -> None:
            with open(local_path, "rb") as src, tmp.fs.open_output_stream(tmp.path) as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
        self._publish(upload, os.path.getsize(local_path))

    def check_usable(self, flag: str) -> None:
        """Raise StoreError naming `flag` if this object-store location cannot be reached: no such bucket,
        refused credentials, an endpoint that does not answer (after the usual retries)."""
        if self.is_local:
            return
        bucket = self.path.split("/", 1)[0]
        try:
            kind = retrying(lambda: self.fs.get_file_info(bucket).type)
        except OSError as e:
            raise StoreError(f"{flag} {self.uri}: the object store refused or did not answer: "
                             f"{_first_line(e)} (endpoint and credentials come from AWS_ENDPOINT_URL, "
                             "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)") from None
        if kind == pafs.FileType.NotFound:
            raise StoreError(f"{flag} {self.uri}: bucket {bucket!r} does not exist (create it first)")

    @contextlib.contextmanager
    def local_file(self, limit: int | None = None) -> Iterator[str]:
        """A local path holding this file's bytes (a download for object stores; ffmpeg needs to seek). With
        `limit`, SpoolFull is raised before any byte is fetched when the download would take this process's
        files in the spool folder past `limit` bytes; so is it when the disk has no room for it."""
        if self.is_local:
            yield self.path
            return
        size = retrying(self.info).size
        if limit is not None and (used := spool_use(os.getpid())) + size > limit:
            raise SpoolFull(f"{self.uri} is {size / 2**30:.2f} GB: with the {used / 2**30:.2f} GB this task "
                            f"already holds it would pass the {limit / 2**30:.2f} GB of local disk a task may use "
                            "(--spool-gb)")
        free = shutil.disk_usage(spool_dir()).free
        if size > free:
            raise SpoolFull(f"{self.uri} is {size / 2**30:.2f} GB, but the spool disk of this node has "
                            f"{free / 2**30:.2f} GB free")
        suffix = os.path.splitext(self.path)[1]
        with tempfile.NamedTemporaryFile(suffix=suffix, dir=spool_dir(), prefix=f"{os.getpid()}-") as tmp:
            def download():
                tmp.seek(0)
                tmp.truncate()
                with self.fs.open_input_stream(self.path) as src:
                    shutil.copyfileobj(src, tmp, length=1 << 20)
            retrying(download)
            tmp.flush()
            yield tmp.name


def spool_dir() -> str:
    """This machine's folder for the local files of a running job (downloads, shards being written, plans
    being made), each named after the process that owns it (`<pid>-...`), so that `sweep_spool` can tell a
    killed process's leftovers from a live one's files."""
    folder = os.path.join(tempfile.gettempdir(), SPOOL_DIR)
    os.makedirs(folder, exist_ok=True)
    return folder


def spool_use(pid: int) -> int:
    """Bytes the files of process `pid` take in the spool folder (its downloads and shards being written)."""
    used = 0
    for entry in os.scandir(spool_dir()):
        if entry.name.split("-", 1)[0] == str(pid):
            with contextlib.suppress(FileNotFoundError):
                used += (entry.stat().st_size if entry.is_file() else
                         sum(f.stat().st_size for f in os.scandir(entry.path) if f.is_file()))
    return used


def sweep_spool() -> int:
    """Remove what processes of this machine that no longer run left in the spool folder; returns how many."""
    removed = 0
    for name in os.listdir(spool_dir()):
        pid = name.split("-", 1)[0]
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        path = os.path.join(spool_dir(), name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else _remove(path)
        removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this id runs (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a URI (s3://, gs://, hdfs://, file://; characters a URI may not hold, like
    spaces, are escaped first; existing %-escapes are kept), else fsspec's for the schemes pyarrow lacks
    (memory://, az://, ...). S3 gets the AWS standard retry strategy, so an outage of about a minute passes."""
    if uri.startswith("s3://") and "?" not in uri:
        bucket, _, key = uri[len("s3://"):].partition("/")
        return _s3(bucket), f"{bucket}/{key}" if key else bucket
    for candidate in (uri, quote(uri, safe=":/%")):
        try:
            return pafs.FileSystem.from_uri(candidate)
        except pa.ArrowInvalid as e:
            if "Unrecognized filesystem type" in str(e):
                break
            if candidate != uri:
                raise

    fs, path = fsspec.core.url_to_fs(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


@functools.lru_cache(maxsize=64)
def _s3(bucket: str) -> pafs.S3FileSystem:
    """One client per bucket and process; its region as pyarrow resolves it for the bucket."""
    found, _ = pafs.FileSystem.from_uri(f"s3://{bucket}")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return pafs.S3FileSystem(region=found.region, endpoint_override=endpoint,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(S3_ATTEMPTS))


def lance_options(uri: str) -> dict[str, str] | None:
    """Storage options for a Lance table at `uri`: Lance reads the standard AWS variables itself; its client
    retries as long as pyarrow's does (Lance's default gives up after 3 quick tries); a plain-HTTP endpoint (a
    test or on-premises store) must also be allowed explicitly."""
    if "://" not in uri or uri.startswith("file://"):
        return None
    options = {"client_max_retries": str(LANCE_RETRIES), "client_retry_timeout": str(LANCE_RETRY_TIMEOUT_S)}
    if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["allow_http"] = "true"
    return options


def is_local_uri(uri: str) -> bool:
    """Whether `uri` names this machine's filesystem (a path or file://), without contacting any store."""
    return "://" not in uri or uri.startswith("file://")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def resolve_against(base: Location, reference: str) -> str:
    """`reference` as given when absolute or a URI, else relative to the folder `base`."""
    if "://" in reference or os.path.isabs(reference):
        return reference
    return base.child(reference).uri
