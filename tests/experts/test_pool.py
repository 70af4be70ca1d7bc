from __future__ import annotations

import asyncio

import httpx
import pytest

from experts.pool import ExpertPool
from router.errors import ExpertConnectionError, ExpertHTTPError, NoHealthyExpert, RateLimited
from tests.experts.helpers import (
    Router,
    decision,
    info,
    no_sleep,
    ok,
    refuse,
    request,
    snapshot,
    sse,
    status,
    timeout,
)


def make_pool(router: Router, *experts, clock=None, **kw) -> ExpertPool:
    """A pool over `router`'s experts; no real sleeps and no health loop unless the test asks."""
    kw.setdefault("sleep", no_sleep)
    kw.setdefault("health_interval_s", 0)
    if clock is not None:
        kw["clock"] = clock
    return ExpertPool(snapshot(*experts), transport=router.transport(), **kw)


async def test_complete_uses_chosen_expert():
    r = Router(a=ok("A"), b=ok("B"))
    async with make_pool(r, info("a"), info("b")) as pool:
        res = await pool.complete(decision("a", alternates=("b",)), request())
    assert res.expert == "a" and res.content == "A" and res.attempts == ()
    assert r.count("b") == 0


async def test_retry_once_on_retryable_then_succeed():
    calls = {"n": 0}

    def flaky(req):
        calls["n"] += 1
        return httpx.Response(503, text="x") if calls["n"] == 1 else ok("A")(req)

    sleeps = []

    async def sleep(s):
        sleeps.append(s)

    r = Router(a=flaky)
    async with make_pool(r, info("a"), retries=1, backoff_s=0.5, sleep=sleep) as pool:
        res = await pool.complete(decision("a"), request())
    assert res.content == "A" and calls["n"] == 2
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5  # backoff_s with jitter (test_backoff.py)
    assert [a["error"] for a in res.attempts] == ["ExpertHTTPError"]


async def test_no_retry_on_non_retryable_but_failover():
    r = Router(a=status(400), b=ok("B"))
    async with make_pool(r, info("a"), info("b"), retries=3) as pool:
        res = await pool.complete(decision("a", alternates=("b",)), request())
    assert r.count("a") == 1 and res.expert == "b"
    assert res.attempts[0]["status"] == 400


async def test_failover_order_experts_then_alternates():
    r = Router(a=refuse, b=status(500), c=timeout, d=ok("D"), e=ok("E"))
    experts = [info(n) for n in "abcde"]
    async with make_pool(r, *experts, retries=0) as pool:
        res = await pool.complete(decision("a", alternates=("b", "c", "d", "e")), request())
    assert res.expert == "d"
    assert [a["expert"] for a in res.attempts] == ["a", "b", "c"]
    assert [a["error"] for a in res.attempts] == ["ExpertConnectionError", "ExpertHTTPError", "ExpertTimeout"]
    assert r.count("e") == 0


async def test_all_fail_raises_typed_error_with_attempts():
    r = Router(a=refuse, b=refuse)
    async with make_pool(r, info("a"), info("b"), retries=1) as pool:
        with pytest.raises(ExpertConnectionError) as ei:
            await pool.complete(decision("a", alternates=("b",)), request())
    assert len(ei.value.attempts) == 4  # two tries each


async def test_no_candidates_is_no_healthy_expert():
    r = Router()
    async with make_pool(r, info("a", enabled=False)) as pool:
        with pytest.raises(NoHealthyExpert):
            await pool.complete(decision("a", alternates=("ghost",)), request())


async def test_breaker_opens_skips_then_half_open_probe_closes(clock):
    state = {"fail": True}

    def a(req):
        return httpx.Response(500, text="x") if state["fail"] else ok("A")(req)

    r = Router(a=a, b=ok("B"))
    async with make_pool(
        r, info("a"), info("b"), clock=clock, retries=0, breaker_failures=2, breaker_cooldown_s=15
    ) as pool:
        d = decision("a", alternates=("b",))
        for _ in range(2):
            assert (await pool.complete(d, request())).expert == "b"
        assert pool.breaker_state("a") == "open"
        assert pool.load()["a"].healthy is False
        res = await pool.complete(d, request())
        assert res.expert == "b" and res.attempts[0]["error"] == "circuit_open"
        assert r.count("a") == 2  # not called while open
        clock.advance(15)
        assert pool.breaker_state("a") == "half_open"
        state["fail"] = False
        assert (await pool.complete(d, request())).expert == "a"
        assert pool.breaker_state("a") == "closed" and pool.load()["a"].healthy


async def test_half_open_probe_failure_reopens(clock):
    r = Router(a=status(500), b=ok("B"))
    async with make_pool(
        r, info("a"), info("b"), clock=clock, retries=0, breaker_failures=1, breaker_cooldown_s=5
    ) as pool:
        d = decision("a", alternates=("b",))
        await pool.complete(d, request())
        clock.advance(5)
        await pool.complete(d, request())
        assert r.count("a") == 2 and pool.breaker_state("a") == "open"


async def test_health_checks_feed_breaker(clock):
    state = {"up": False}

    def a(req):
        if not state["up"]:
            raise httpx.ConnectError("refused", request=req)
        return ok("A")(req)

    r = Router(a=a)
    async with make_pool(r, info("a"), clock=clock, breaker_failures=2, breaker_cooldown_s=10) as pool:
        assert await pool.check_health() == {"a": False}
        assert pool.load()["a"].healthy is False
        await pool.check_health()
        assert pool.breaker_state("a") == "open"
        state["up"] = True
        await pool.check_health()
        assert pool.breaker_state("a") == "open"  # cooldown not over
        clock.advance(10)
        assert await pool.check_health() == {"a": True}
        assert pool.breaker_state("a") == "closed" and pool.load()["a"].healthy
        assert r.count("a", "/v1/models") == 4


async def test_health_loop_runs_on_interval():
    r = Router(a=ok())
    async with make_pool(r, info("a"), health_interval_s=0.01):
        for _ in range(200):
            if r.count("a", "/v1/models") >= 2:
                break
            await asyncio.sleep(0.01)
    assert r.count("a", "/v1/models") >= 2


async def test_load_figures(clock):
    def a(req):
        clock.advance(0.25)  # each call takes 250 ms on the fake clock
        return ok("A")(req)

    r = Router(a=a, b=status(500))
    async with make_pool(r, info("a"), info("b"), clock=clock, retries=0, load_window_s=30) as pool:
        for _ in range(3):
            await pool.complete(decision("a"), request())
        with pytest.raises(ExpertHTTPError):
            await pool.complete(decision("b"), request())
        load = pool.load()
        assert load["a"].recent_requests == 3 and load["a"].latency_ms == pytest.approx(250.0)
        assert load["a"].error_rate == 0.0 and load["a"].in_flight == 0
        assert load["b"].error_rate == 1.0 and load["b"].recent_requests == 1
        clock.advance(31)
        assert pool.load()["a"].recent_requests == 0


async def test_concurrency_limit_queues_then_rate_limits():
    gate = asyncio.Event()
    transport_calls = []

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, req):
            transport_calls.append(req.url.host)
            await gate.wait()
            return httpx.Response(200, json={"choices": [{"message": {"content": "A"}}]})

    pool = ExpertPool(
        snapshot(info("a", max_concurrency=1)),
        transport=Slow(),
        queue_timeout_s=0.05,
        sleep=no_sleep,
    )
    async with pool:
        first = asyncio.create_task(pool.complete(decision("a"), request()))
        while not transport_calls:
            await asyncio.sleep(0)
        assert pool.load()["a"].in_flight == 1
        with pytest.raises(RateLimited) as ei:
            await pool.complete(decision("a"), request())
        assert ei.value.status == 429
        # a queued request gets the slot when it frees up
        pool.queue_timeout_s = 30.0
        queued = asyncio.create_task(pool.complete(decision("a"), request()))
        await asyncio.sleep(0)
        gate.set()
        assert (await first).content == "A" and (await queued).content == "A"


async def test_full_expert_fails_over_to_next():
    gate = asyncio.Event()

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, req):
            if req.url.host == "a.test":
                await gate.wait()
            return httpx.Response(200, json={"choices": [{"message": {"content": req.url.host}}]})

    pool = ExpertPool(
        snapshot(info("a", max_concurrency=1), info("b")),
        transport=Slow(),
        queue_timeout_s=0.01,
        sleep=no_sleep,
    )
    async with pool:
        d = decision("a", alternates=("b",))
        first = asyncio.create_task(pool.complete(d, request()))
        await asyncio.sleep(0.01)
        res = await pool.complete(d, request())
        assert res.expert == "b" and res.attempts[0]["error"] == "RateLimited"
        gate.set()
        await first


async def test_update_snapshot_adds_and_removes():
    r = Router(a=ok("A"), b=ok("B"))
    async with make_pool(r, info("a")) as pool:
        with pytest.raises(NoHealthyExpert):
            await pool.complete(decision("b"), request())
        pool.update_snapshot(snapshot(info("b"), revision=2))
        assert (await pool.complete(decision("b"), request())).content == "B"
        assert set(pool.load()) == {"b"}
        with pytest.raises(NoHealthyExpert):
            await pool.complete(decision("a"), request())


async def test_update_snapshot_keeps_unchanged_state(clock):
    r = Router(a=status(500))
    async with make_pool(r, info("a"), clock=clock, retries=0, breaker_failures=1) as pool:
        with pytest.raises(ExpertHTTPError):
            await pool.complete(decision("a"), request())
        pool.update_snapshot(snapshot(info("a"), info("b"), revision=2))
        assert pool.breaker_state("a") == "open"
        pool.update_snapshot(snapshot(info("a", timeout_s=9), revision=3))
        assert pool.breaker_state("a") == "closed"  # changed expert: fresh state


# ------------------------------------------------------------------------------------ streaming
async def test_stream_fails_over_before_first_chunk():
    r = Router(a=status(500), b=ok("hello world"))
    async with make_pool(r, info("a"), info("b"), retries=0) as pool:
        chunks = [c async for c in pool.stream(decision("a", alternates=("b",)), request())]
    assert "".join(c.delta for c in chunks) == "helloworld"
    assert {c.expert for c in chunks} == {"b"}
    assert chunks[-1].usage is not None and chunks[-1].finish_reason == "stop"


async def test_stream_mid_stream_death_raises_after_partial_output(clock):
    def dying(req):
        if req.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": []})
        body = sse("partial", usage=None, done=False)
        return httpx.Response(200, content=body.split(b'data: {"choices": [{"index": 0, "delta": {}')[0])

    r = Router(a=dying, b=ok("B"))
    async with make_pool(r, info("a"), info("b"), clock=clock, retries=0, breaker_failures=1) as pool:
        got = []
        with pytest.raises(ExpertConnectionError):
            async for c in pool.stream(decision("a", alternates=("b",)), request()):
                got.append(c.delta)
        assert got == ["partial"]
        assert r.count("b") == 0  # no failover after the first chunk
        assert pool.breaker_state("a") == "open"
        assert pool.load()["a"].in_flight == 0


async def test_stream_all_fail_raises_before_any_chunk():
    r = Router(a=refuse)
    async with make_pool(r, info("a"), retries=1) as pool:
        with pytest.raises(ExpertConnectionError):
            _ = [c async for c in pool.stream(decision("a"), request())]
        assert r.count("a") == 2


async def test_stream_abandoned_by_consumer_releases_slot():
    r = Router(a=ok("one two three"))
    async with make_pool(r, info("a", max_concurrency=1)) as pool:
        agen = pool.stream(decision("a"), request())
        first = await agen.__anext__()
        assert first.delta == "one" and pool.load()["a"].in_flight == 1
        await agen.aclose()
        assert pool.load()["a"].in_flight == 0


async def test_from_settings_reads_knobs():
    class S:
        retries = 4
        breaker_failures = 7
        breaker_cooldown_s = 3.0
        health_interval_s = 0.0
        aggregate_deadline_s = 9.0

    pool = ExpertPool.from_settings(snapshot(info("a")), S())
    assert (pool.retries, pool.breaker_failures, pool.aggregate_deadline_s) == (4, 7, 9.0)
    await pool.aclose()
