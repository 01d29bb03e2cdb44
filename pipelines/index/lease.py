"""One writer per index at a time, on a local disk or an object store: a lease row in a Lance table.

Taking the lease is a conditional update ("holder is empty or expired") that Lance commits with a
conditional write; of two runs updating at once, one commit wins and the other, retried against the new
version, finds the condition false. A run renews its lease while it works; a killed run's lease runs out after
`ttl`, so the next run can go on without an operator; on the same machine a dead holder's lease is taken at
once (its process is gone).
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import time

import lance
import pyarrow as pa

from pipelines.index.rows import LEASE, VideoIndexError, sql_text

TTL = dt.timedelta(minutes=10)


class IndexBusy(VideoIndexError):
    pass


def _ms(when: float) -> int:
    return int(when * 1000)


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(host: str) -> bool:
    """Whether `host` ("machine:pid") names a process of this machine that no longer runs."""
    machine, _, pid = host.rpartition(":")
    if machine != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class WriterLease:
    def __init__(self, store, run_id: str, ttl: dt.timedelta = TTL):
        self.store, self.run_id, self.ttl = store, run_id, ttl
        self.uri = store.uri(LEASE)
        self.renewed = 0.0

    def _table(self):
        if self.store.dataset(table=LEASE) is None:
            empty = pa.table({"slot": ["writer"], "holder": [""], "host": [""], "taken_at_ms": [0],
                              "expires_at_ms": [0]})
            try:
                lance.write_dataset(empty, self.uri, mode="create", storage_options=self.store.options)
            except (OSError, ValueError):
                pass   # another run created it at the same moment; one creation is all that is needed
        return lance.dataset(self.uri, storage_options=self.store.options)

    def acquire(self) -> None:
        now = time.time()
        table = self._table()
        where = f"holder = '' OR expires_at_ms < {_ms(now)} OR holder = {sql_text(self.run_id)}"
        row = table.to_table().to_pylist()[0]
        if _dead_here(row["host"]):
            where += f" OR holder = {sql_text(row['holder'])}"
        result = table.update({"holder": sql_text(self.run_id), "host": sql_text(_me()), "taken_at_ms": str(_ms(now)),
                               "expires_at_ms": str(_ms(now + self.ttl.total_seconds()))}, where=where)
        if result["num_rows_updated"] != 1:
            row = self._table().to_table().to_pylist()[0]
            until = dt.datetime.fromtimestamp(row["expires_at_ms"] / 1000, dt.timezone.utc)
            raise IndexBusy(f"{self.store.location}: embedding run {row['holder']} (on {row['host']}) is writing "
                            f"this index; its lease runs until {until:%Y-%m-%d %H:%M:%S} UTC. Wait for it to "
                            f"finish (a killed run's lease simply runs out)")
        self.renewed = now

    def renew(self, every: float | None = None) -> None:
        """Extend the lease (at most once per `every` seconds, default a quarter of the ttl)."""
        every = self.ttl.total_seconds() / 4 if every is None else every
        now = time.time()
        if now - self.renewed < every:
            return
        result = self._table().update({"expires_at_ms": str(_ms(now + self.ttl.total_seconds()))},
                                      where=f"holder = {sql_text(self.run_id)}")
        if result["num_rows_updated"] != 1:
            raise IndexBusy(f"{self.store.location}: this run's writer lease ran out and another run took it; "
                            f"stopping before writing anything more (what was committed stays)")
        self.renewed = now

    def release(self) -> None:
        self._table().update({"holder": "''", "expires_at_ms": "0"}, where=f"holder = {sql_text(self.run_id)}")

    def __enter__(self) -> WriterLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
