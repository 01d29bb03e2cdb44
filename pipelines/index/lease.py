"""One writer per index at a time: the index's lease (`pipelines.storage.lease`) in `INDEX/lease.lance`."""
from __future__ import annotations

import datetime as dt

from pipelines.index.rows import LEASE, VideoIndexError
from pipelines.storage.lease import TTL, Busy, Lease


class IndexBusy(VideoIndexError, Busy):
    pass


class WriterLease(Lease):
    def __init__(self, store, run_id: str, ttl: dt.timedelta = TTL):
        super().__init__(store.uri(LEASE), store.options, run_id, str(store.location), "embedding run",
                         "this index", IndexBusy, ttl)
