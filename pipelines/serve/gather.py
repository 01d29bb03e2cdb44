"""Batching by load: a query reaching an idle replica is computed at once; under load, each pass of the text
encoder takes the queries that queued during the pass before it and those of the clients that pass answered.

Serve's `@serve.batch` holds the first query of every batch for a fixed wait, which a lone query pays in full;
with no wait it forms batches of one that queue behind the running pass. Here only a pass that follows a loaded
one (a batch of several, or queries queued behind it) waits, `wait_s` (about one HTTP round trip), for the
clients just answered: their next queries join it rather than forming a small batch of their own, so under
steady load a batch grows to the number of clients (up to `max_size`), and a lone client waits for nothing.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable


class Gatherer:
    """`await gatherer(item)`: the answer `run(items)` gives for `item`, computed in a worker thread with the
    items queued alongside it; the event loop stays free to gather the next batch meanwhile."""

    def __init__(self, run: Callable[[list], list], max_size: int, wait_s: float):
        if max_size < 1 or wait_s < 0:
            raise ValueError(f"max_size must be at least 1 and wait_s at least 0, got {max_size} and {wait_s}")
        self._run, self._max_size, self._wait_s = run, max_size, wait_s
        self._queued: list[tuple[object, asyncio.Future]] = []
        self._passes: asyncio.Task | None = None

    async def __call__(self, item):
        future = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        if self._passes is None or self._passes.done():
            self._passes = asyncio.create_task(self._run_passes())
        return await future

    async def _run_passes(self) -> None:
        """Passes while anything is queued; a caller that gave up (cancelled) is left out of the answers."""
        while self._queued:
            batch = [(item, future) for item, future in self._queued[:self._max_size] if not future.done()]
            del self._queued[:self._max_size]
            if not batch:
                continue
            try:
                answers = await asyncio.to_thread(self._run, [item for item, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers to a batch of {len(batch)}")
            except Exception as err:     # each caller of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)
            if (len(batch) > 1 or self._queued) and len(self._queued) < self._max_size:
                await asyncio.sleep(self._wait_s)     # under load: the clients just answered ask again
