"""One writer at a time for a folder on a local disk or an object store: a lease row in a Lance table.

Taking the lease is a conditional update ("holder is empty, or is still the holder we watched go silent")
that Lance commits with a conditional write; of two runs updating at once, one commit wins and the other,
retried against the new version, finds the condition false. From then on a heartbeat thread renews the lease
every quarter of `ttl`, whatever the work is doing (a model download, a long ANN build); a writer calls
`check()` before each commit, so a run whose heartbeats failed for a whole `ttl` (another run may have taken
over) stops before writing anything more.

No two hosts' clocks are compared to take a lease over. A lease whose expiry, by the holder's clock, is
still ahead is busy at once; one that looks expired is watched for a whole `ttl` on the taker's own
monotonic clock, and taken only if its heartbeat count did not move (a live holder beats three times
meanwhile). On the same machine, a holder whose process is gone is replaced at once.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time

import lance
import pyarrow as pa

from pipelines.storage.location import process_alive, sql_text
from tempme.errors import UserError

TTL = dt.timedelta(minutes=10)
SCHEMA = pa.schema([("slot", pa.string()), ("holder", pa.string()), ("host", pa.string()),
                    ("taken_at_ms", pa.int64()), ("expires_at_ms", pa.int64()), ("beat", pa.int64())])


class Busy(UserError):
    """Another run holds the lease, or this run lost it."""


class Lease:
    """The lease table at `uri` for `run_id`. Messages name the `place` written to, the holder as `what`
    ("embedding run") and the place as `target` ("this index"); `busy` is the error raised."""

    def __init__(self, uri: str, options: dict | None, run_id: str, place: str, what: str, target: str,
                 busy: type[Busy] = Busy, ttl: dt.timedelta = TTL):
        self.uri, self.options, self.run_id, self.place, self.what = uri, options, run_id, place, what
        self.target = target
        self.busy, self.ttl = busy, ttl
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back -------------------------------------------------------------------------

    def acquire(self) -> None:
        row = self._row()
        if not (row["holder"] in ("", self.run_id) or _dead_here(row["host"])):
            if row["expires_at_ms"] > _ms(time.time()):
                raise self.busy(self._message(row))
            row = self._watch(row)
        now = time.time()
        where = (f"(holder = {sql_text(row['holder'])} AND beat = {row['beat']})"
                 + (" OR holder = ''" if row["holder"] == "" else ""))
        result = self._table().update({"holder": sql_text(self.run_id), "host": sql_text(_me()),
                                       "taken_at_ms": str(_ms(now)), "beat": "beat + 1",
                                       "expires_at_ms": str(_ms(now + self.ttl.total_seconds()))}, where=where)
        if result["num_rows_updated"] != 1:
            raise self.busy(self._message(self._row()))
        self.lost = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease {self.uri}", daemon=True)
        self._thread.start()

    def _watch(self, row: dict) -> dict:
        """Wait out a lease that looks expired: busy as soon as its holder beats, the silent row after `ttl`."""
        deadline = time.monotonic() + self.ttl.total_seconds()
        while time.monotonic() < deadline:
            time.sleep(min(self.ttl.total_seconds() / 20, deadline - time.monotonic(), 5.0))
            now = self._row()
            if now["holder"] == "":
                return now
            if (now["holder"], now["beat"]) != (row["holder"], row["beat"]):
                raise self.busy(self._message(now))
        return row

    def check(self) -> None:
        """Raise if this run no longer holds the lease (call before each commit)."""
        if self.lost:
            raise self.busy(f"{self.place}: this run's lease ran out (its heartbeats failed for "
                            f"{self.ttl.total_seconds():.0f} s) and another run may hold it; stopping before "
                            "writing anything more (what was committed stays)")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if not self.lost:
            self._table().update({"holder": "''", "expires_at_ms": "0"}, where=f"holder = {sql_text(self.run_id)}")
            self._table().cleanup_old_versions(older_than=dt.timedelta(hours=1))   # a version per heartbeat

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- the heartbeat ------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl.total_seconds() / 4):
            try:
                self._beat_or_lose()
            except (OSError, ValueError, RuntimeError):      # the store is away: try again next beat
                if time.monotonic() - last_ok > self.ttl.total_seconds():
                    self.lost = True
                continue
            finally:
                if self.lost:
                    return
            last_ok = time.monotonic()

    def _beat_or_lose(self) -> None:
        """Renew the lease once; mark it lost if another run holds it now."""
        result = self._table().update(
            {"beat": "beat + 1", "expires_at_ms": str(_ms(time.time() + self.ttl.total_seconds()))},
            where=f"holder = {sql_text(self.run_id)}")
        if result["num_rows_updated"] != 1:
            self.lost = True

    # -- the table ----------------------------------------------------------------------------------------

    def _table(self):
        try:
            ds = lance.dataset(self.uri, storage_options=self.options)
        except (FileNotFoundError, ValueError):
            empty = pa.table({"slot": ["writer"], "holder": [""], "host": [""], "taken_at_ms": [0],
                              "expires_at_ms": [0], "beat": [0]}, schema=SCHEMA)
            try:
                lance.write_dataset(empty, self.uri, mode="create", storage_options=self.options)
            except (OSError, ValueError):
                pass   # another run created it at the same moment; one creation is all that is needed
            ds = lance.dataset(self.uri, storage_options=self.options)
        if "beat" not in ds.schema.names:       # a lease table written before heartbeats
            ds.add_columns({"beat": "CAST(0 AS BIGINT)"})
            ds = lance.dataset(self.uri, storage_options=self.options)
        return ds

    def _row(self) -> dict:
        return self._table().to_table().to_pylist()[0]

    def _message(self, row: dict) -> str:
        until = dt.datetime.fromtimestamp(row["expires_at_ms"] / 1000, dt.UTC)
        return (f"{self.place}: {self.what} {row['holder']} (on {row['host']}) is writing {self.target}; its "
                f"lease runs until {until:%Y-%m-%d %H:%M:%S} UTC by its clock and is renewed while it runs. Wait "
                f"for it to finish (a killed run's lease is taken over once it has been silent for "
                f"{self.ttl.total_seconds() / 60:.0f} minutes)")


def run_name() -> str:
    """A name for a run in lease messages: when and where it started."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}"


def _ms(when: float) -> int:
    return int(when * 1000)


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(host: str) -> bool:
    """Whether `host` ("machine:pid") names a process of this machine that no longer runs."""
    machine, _, pid = host.rpartition(":")
    return machine == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
