"""Batching by load: a lone query runs at once, queries arriving during a pass share the next one with the
clients that pass answered, at most `max_size` at a time; errors reach each caller of their batch, and a caller
that gave up is left out."""
import asyncio
import threading

import pytest

from pipelines.serve.gather import Gatherer


class Passes:
    """A batch function that records its batches and, while `hold` is clear, blocks in its worker thread."""

    def __init__(self, fail_on=None):
        self.batches, self.hold, self.started, self.fail_on = [], threading.Event(), threading.Event(), fail_on
        self.hold.set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.started.set()
        assert self.hold.wait(30), "the test never released the pass"
        if self.fail_on in items:
            raise ValueError(f"cannot answer {self.fail_on}")
        return [f"answer to {item}" for item in items]


async def first_pass_held(passes, gather, item):
    """Start a pass for `item` and return once its thread is inside it, with the pass held."""
    passes.hold.clear()
    task = asyncio.create_task(gather(item))
    assert await asyncio.to_thread(passes.started.wait, 30)
    return task


def test_a_query_reaching_an_idle_gatherer_waits_for_nothing():
    passes = Passes()
    gather = Gatherer(passes, max_size=8, wait_s=60)     # a wait would outlast the bound below

    async def one_at_a_time():
        return [await gather(i) for i in range(3)]

    assert asyncio.run(asyncio.wait_for(one_at_a_time(), 30)) == ["answer to 0", "answer to 1", "answer to 2"]
    assert passes.batches == [[0], [1], [2]]


def test_the_clients_a_pass_answered_join_the_next_pass():
    passes = Passes()
    gather = Gatherer(passes, max_size=8, wait_s=0.5)

    async def client(name, held=False):
        if held:
            await (await first_pass_held(passes, gather, f"{name}1"))
        else:
            await gather(f"{name}1")
        return [await gather(f"{name}{i}") for i in (2, 3)]

    async def two_clients():
        a = asyncio.create_task(client("a", held=True))
        assert await asyncio.to_thread(passes.started.wait, 30)
        b = asyncio.create_task(client("b"))
        await asyncio.sleep(0)          # b's first query is queued behind a's
        passes.hold.set()
        return await a, await b

    assert asyncio.run(two_clients()) == (["answer to a2", "answer to a3"], ["answer to b2", "answer to b3"])
    assert [sorted(b) for b in passes.batches] == [["a1"], ["a2", "b1"], ["a3", "b2"], ["b3"]]


def test_queries_arriving_during_a_pass_share_the_next_at_most_max_size_at_a_time():
    passes = Passes()
    gather = Gatherer(passes, max_size=4, wait_s=0)

    async def busy():
        first = await first_pass_held(passes, gather, "first")
        rest = [asyncio.create_task(gather(i)) for i in range(10)]
        await asyncio.sleep(0)          # all ten are queued
        passes.hold.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(busy())
    assert first == "answer to first" and rest == [f"answer to {i}" for i in range(10)]
    assert passes.batches == [["first"], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_an_error_reaches_each_caller_of_its_batch_and_the_next_batch_still_runs():
    passes = Passes(fail_on=2)
    gather = Gatherer(passes, max_size=3, wait_s=0)

    async def mixed():
        first = await first_pass_held(passes, gather, 0)
        rest = [asyncio.create_task(gather(i)) for i in range(1, 6)]
        await asyncio.sleep(0)
        passes.hold.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    answers = asyncio.run(mixed())
    assert answers[0] == "answer to 0" and answers[4:] == ["answer to 4", "answer to 5"]
    assert all(isinstance(a, ValueError) and "cannot answer 2" in str(a) for a in answers[1:4])
    assert passes.batches == [[0], [1, 2, 3], [4, 5]]


def test_a_caller_that_gave_up_is_left_out_of_the_next_batch():
    passes = Passes()
    gather = Gatherer(passes, max_size=8, wait_s=0)

    async def one_gives_up():
        first = await first_pass_held(passes, gather, "first")
        stays, leaves = asyncio.create_task(gather("stays")), asyncio.create_task(gather("leaves"))
        await asyncio.sleep(0)
        leaves.cancel()
        passes.hold.set()
        return await first, await stays

    assert asyncio.run(one_gives_up()) == ("answer to first", "answer to stays")
    assert passes.batches == [["first"], ["stays"]]


def test_a_batch_function_that_miscounts_its_answers_fails_its_callers():
    gather = Gatherer(lambda items: items[:-1], max_size=4, wait_s=0)
    with pytest.raises(RuntimeError, match="0 answers to a batch of 1"):
        asyncio.run(gather("x"))


@pytest.mark.parametrize("max_size, wait_s", [(0, 0.0), (4, -1.0)])
def test_max_size_and_wait_are_checked(max_size, wait_s):
    with pytest.raises(ValueError, match=f"got {max_size} and {wait_s}"):
        Gatherer(lambda items: items, max_size=max_size, wait_s=wait_s)
