"""The writers' lease: one writer at a time, a dead or expired holder replaced, on a real S3 server too."""
import datetime as dt
import multiprocessing
import time

import pytest

from pipelines.index import IndexBusy, IndexStore
from pipelines.index.lease import WriterLease
from tests.pipelines.index.indexes import EMB, IDS, V1, build, commit


def test_a_second_writer_is_refused_while_the_first_holds_the_lease(tmp_path):
    store = build(tmp_path)
    with store.writer(V1, "first"):
        with pytest.raises(IndexBusy, match="embedding run first .* is writing this index"):
            with store.writer(V1, "second"):
                pass
    with store.writer(V1, "second"):     # released: the next one goes on
        pass


def _hold_lease_and_die(location):

    WriterLease(IndexStore(location), "dead").acquire()   # the process ends without releasing


def test_the_lease_of_a_dead_process_on_this_machine_is_taken_at_once(tmp_path):
    store = build(tmp_path)
    process = multiprocessing.get_context("spawn").Process(target=_hold_lease_and_die, args=(str(tmp_path),))
    process.start()
    process.join()
    with store.writer(V1, "next"):
        pass


def test_a_silent_lease_is_taken_over_and_its_holder_stops_before_its_next_commit(tmp_path):
    """A holder whose heartbeats stop (a hung or cut-off host) is replaced after a whole ttl of silence,
    watched on the taker's own clock; the old holder then finds it lost the lease and commits nothing."""
    store = build(tmp_path)
    ttl = dt.timedelta(seconds=2)
    stale = WriterLease(store, "stale", ttl=ttl)
    stale.acquire()
    stale._stop.set()                                   # its heartbeat stops, as on a host cut off the network
    stale._thread.join()
    with pytest.raises(IndexBusy, match="embedding run stale"):        # its expiry is still ahead: busy at once
        WriterLease(store, "early", ttl=ttl).acquire()
    time.sleep(ttl.total_seconds())
    started = time.monotonic()
    taker = WriterLease(store, "next", ttl=ttl)
    taker.acquire()                                     # looks expired: watched for a ttl, then taken
    assert time.monotonic() - started >= ttl.total_seconds()
    stale._beat_or_lose()                               # its next beat finds the lease taken
    with pytest.raises(IndexBusy, match="ran out"):
        stale.check()
    taker.release()


def test_a_live_holder_keeps_its_lease_through_long_work_without_any_commit(tmp_path):
    """The heartbeat renews the lease however long the work between commits takes."""
    store = build(tmp_path)
    ttl = dt.timedelta(seconds=1)
    with WriterLease(store, "busy", ttl=ttl) as holder:
        time.sleep(3 * ttl.total_seconds())            # three ttls of work and no commit
        with pytest.raises(IndexBusy, match="embedding run busy"):
            WriterLease(store, "other", ttl=ttl).acquire()
        holder.check()                                  # still ours


def _contend(uri, name, barrier, results):
    try:
        barrier.wait()
        with IndexStore(uri).writer(V1, name) as w:
            commit(w, IDS, EMB)
            results.put((name, "wrote"))
    except IndexBusy as e:
        results.put((name, f"busy: {e}"))


def test_two_writers_on_an_s3_index_at_once_one_writes_the_other_is_told(s3_server):
    """Two processes race for the lease of one index on a real S3 server."""
    uri = f"{s3_server.prefix('race')}/index"
    build(uri, ids=IDS[:4], emb=EMB[:4])
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_contend, args=(uri, name, barrier, results)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    outcomes = dict(results.get(timeout=5) for _ in procs)
    assert sorted(o.split(":")[0] for o in outcomes.values()) == ["busy", "wrote"], outcomes
    ids = IndexStore(uri).open().video_ids()
    assert len(ids) == 4 + 40 and set(ids) == set(IDS)    # the winner's commits all whole, the first ones kept
