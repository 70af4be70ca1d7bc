"""The continuous embedding batcher (router_service.EmbedBatcher): batches form from the queue,
never over the bound, errors reach every caller of their batch, and a cancelled caller does not stall the
others. Its use by the router: tests/deploy/test_services.py; its batch sizes through the real service:
bench/routing_throughput.py."""

from __future__ import annotations

import asyncio

import pytest

from deploy.pipeline.router_service import EmbedBatcher


async def test_items_that_arrive_together_share_one_batch() -> None:
    batches: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        batches.append(items)
        await asyncio.sleep(0)
        return [i.upper() for i in items]

    b = EmbedBatcher(run, max_size=8)
    assert await asyncio.gather(*(b.submit(x) for x in "abc")) == ["A", "B", "C"]
    assert batches == [["a", "b", "c"]] and (b.batches, b.items) == (1, 3)


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_runs() -> None:
    calls = 0

    async def run(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model crashed")
        return items

    b = EmbedBatcher(run, max_size=2)
    results = await asyncio.gather(*(b.submit(x) for x in "abc"), return_exceptions=True)
    assert [type(r) for r in results[:2]] == [RuntimeError, RuntimeError] and results[2] == "c"


async def test_a_cancelled_caller_is_left_out_and_the_others_are_answered() -> None:
    release = asyncio.Event()

    async def run(items: list[str]) -> list[str]:
        await release.wait()
        return items

    b = EmbedBatcher(run, max_size=4)
    first = asyncio.ensure_future(b.submit("first"))
    await asyncio.sleep(0.01)  # its batch is running
    gone = asyncio.ensure_future(b.submit("gone"))
    kept = asyncio.ensure_future(b.submit("kept"))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    assert await first == "first" and await kept == "kept"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert b.items == 2
