"""Object-store writes and retries against a real S3 server: cut uploads never appear, outages pass,
permanent errors are not retried."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from pipelines.storage import location as storage
from pipelines.storage.location import Location, retrying


def test_an_upload_cut_short_never_appears_under_its_final_name(tmp_path, s3_server, monkeypatch):
    """As when a node is drained mid-upload: the process is told to exit while the bytes stream."""
    folder = Location.of(s3_server.prefix("cut"))
    local = tmp_path / "big.tar"
    local.write_bytes(b"x" * (12 << 20))

    def cut(src, dst, length):
        dst.write(src.read(length))
        raise SystemExit(1)

    monkeypatch.setattr(shutil, "copyfileobj", cut)
    with pytest.raises(SystemExit):
        folder.child("shard.tar").put_file(str(local))
    monkeypatch.undo()
    assert not folder.child("shard.tar").exists()
    leftovers = folder.list(f".*{storage.TEMP_MARK}*")     # what the next run removes
    assert all(loc.name.startswith(".shard.tar") for loc in leftovers)
    folder.child("shard.tar").put_file(str(local))          # a whole upload does appear, and nothing else stays
    assert folder.child("shard.tar").info().size == 12 << 20
    assert len(folder.list(f".*{storage.TEMP_MARK}*")) == len(leftovers)


def test_reads_and_writes_go_on_through_an_outage_of_the_store(s3_server):
    """The server is stopped for 8 s and started again on its folder and port: the client's own retries
    carry the calls made meanwhile."""
    folder = Location.of(s3_server.prefix("outage"))
    folder.child("before.bin").write_atomic(b"before")
    outage = s3_server.outage(after_s=0.5, for_s=8)
    started = time.monotonic()
    try:
        time.sleep(1.5)                                        # the server is down now
        folder.child("during.bin").write_atomic(b"during")
        assert time.monotonic() - started > 8                # it went through once the server was back
        assert folder.child("before.bin").read_bytes() == b"before"
    finally:
        outage.join(timeout=120)
    assert folder.child("during.bin").read_bytes() == b"during"


def test_permanent_errors_are_raised_at_once_and_transient_ones_retried():
    calls = []

    def refused():
        calls.append(1)
        raise OSError("AWS Error ACCESS_DENIED during GetObject operation: AccessDenied")

    with pytest.raises(OSError, match="AccessDenied"):
        retrying(refused, backoff_s=0)
    assert len(calls) == 1
    calls.clear()

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("AWS Error NETWORK_CONNECTION: connection refused")
        return "done"

    assert retrying(flaky, backoff_s=0) == "done" and len(calls) == 3


def test_a_missing_bucket_is_one_clear_error(s3_server):
    with pytest.raises(storage.StoreError, match="bucket 'no-such-bucket' does not exist"):
        Location.of("s3://no-such-bucket/x").check_usable("--out")


def test_a_killed_process_s_local_files_are_swept_and_a_live_one_s_kept(tmp_path):

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)                                   # a process that has ended
    left = os.path.join(storage.spool_dir(), f"{pid}-download.mp4")
    folder = os.path.join(storage.spool_dir(), f"{pid}-plans-x")
    mine = os.path.join(storage.spool_dir(), f"{os.getpid()}-shard.tar")
    for path in (left, mine):
        open(path, "wb").write(b"x")
    os.makedirs(folder)
    try:
        assert storage.sweep_spool() >= 2
        assert not os.path.exists(left) and not os.path.exists(folder) and os.path.exists(mine)
    finally:
        os.remove(mine)
