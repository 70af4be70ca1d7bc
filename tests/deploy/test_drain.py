"""Graceful shutdown inside a replica: once draining, readiness and new requests get 503 (with
retry-after) while the requests and streams already in flight run to their end."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from deploy.pipeline.ingress import Ingress
from deploy.serve.app import deployment_specs, graceful
from deploy.serve.drain import (
    Drain,
    DrainGate,
    DrainReport,
    ForcedShutdown,
    ShutdownRequested,
    ShutdownSignals,
)
from deploy.settings import Settings
from experts.types import ChatChunk, ChatRequest, ChatResult
from router.types import RouteDecision
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

MSG = [{"role": "user", "content": "What is 2+2?"}]


class HeldGateway(FakeGateway):
    """Answers only once `release` is set, so a request can be held in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = 0

    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        self.entered += 1
        await self.release.wait()
        return await super().complete(decision, request)

    async def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.entered += 1
        async for chunk in super().stream(decision, request):
            yield chunk
            await self.release.wait()


@pytest.fixture
def ingress(tmp_path: Any) -> Ingress:
    settings = Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=0.05)
    return Ingress(settings, FakeRouter(), HeldGateway(), registry=FakeRegistry())


async def _until(pred: Any) -> None:
    for _ in range(400):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_drain_refuses_new_requests_and_lets_in_flight_ones_finish(ingress: Ingress) -> None:
    gateway = ingress.gateway
    assert isinstance(gateway, HeldGateway)
    transport = httpx.ASGITransport(app=ingress.build_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        assert (await c.get("/readyz")).status_code == 200
        plain = asyncio.create_task(c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG}))
        body = {"model": "auto", "messages": MSG, "stream": True}
        streamed = asyncio.create_task(c.post("/v1/chat/completions", json=body))
        await _until(lambda: gateway.entered == 2 and ingress.drain.in_flight == 2)

        state = await ingress.begin_drain()
        assert state["draining"] is True and state["in_flight"] == 2

        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "draining": True}
        refused = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"] == {
            "message": refused.json()["error"]["message"],
            "type": "service_unavailable_error",
            "param": None,
            "code": "shutting_down",
        }
        anthropic = await c.post("/v1/messages", json={"model": "auto", "max_tokens": 8, "messages": MSG})
        assert anthropic.status_code == 503 and anthropic.headers["retry-after"] == "5"
        assert anthropic.json() == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": refused.json()["error"]["message"]},
        }
        assert (await c.get("/healthz")).status_code == 200  # liveness stays up while draining
        assert (await c.get("/metrics")).status_code == 200
        assert gateway.entered == 2  # the refused request never reached the gateway

        gateway.release.set()
        done, stream_done = await plain, await streamed
        assert done.status_code == 200 and done.json()["choices"][0]["message"]["content"] == "four"
        assert stream_done.status_code == 200
        events = [e for e in stream_done.text.split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        text = "".join(
            c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e[6:]).get("choices", [])
        )
        assert text == "four"
        assert await ingress.drain.wait_idle(5.0)
        assert (await ingress.drain_state())["refused"] == 2


async def test_probes_and_scrapes_are_not_requests_in_flight() -> None:
    """A load balancer's readiness poll or a metrics scrape at the signal is not work to drain."""
    release = asyncio.Event()

    async def held(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()

    drain = Drain()
    gate = DrainGate(held, drain=drain)
    calls = {
        path: asyncio.create_task(gate({"type": "http", "path": path}, None, None))
        for path in ("/readyz", "/healthz", "/metrics", "/v1/chat/completions", "/v1/messages")
    }
    await asyncio.sleep(0.01)
    assert drain.in_flight == 2
    release.set()
    await asyncio.gather(*calls.values())
    assert drain.in_flight == 0


async def test_wait_idle_gives_up_after_the_grace_period(ingress: Ingress) -> None:
    ingress.drain.in_flight = 1  # a request that never ends
    assert await ingress.drain.wait_idle(0.05) is False


def raised(kind: type[BaseException], signum: int) -> Any:
    """What raising `signum` in this process raised (it must be a `kind`)."""
    with pytest.raises(kind) as info:
        signal.raise_signal(signum)
    return info.value


def test_first_signal_requests_a_drain_and_a_second_forces() -> None:
    signals = ShutdownSignals()
    signals.install()
    signals.armed = True
    try:
        assert raised(ShutdownRequested, signal.SIGTERM).signum == signal.SIGTERM
        assert raised(ForcedShutdown, signal.SIGINT).exit_code == 130
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGTERM) != signals._handle


def test_a_signal_during_start_up_waits_for_the_next_checkpoint() -> None:
    signals = ShutdownSignals()  # not armed: start-up, where raising inside Ray's C code is unsafe
    signals.install()
    try:
        signal.raise_signal(signal.SIGINT)  # recorded, not raised
        with pytest.raises(ShutdownRequested) as req:
            signals.checkpoint()
        assert req.value.signum == signal.SIGINT
        assert raised(ForcedShutdown, signal.SIGTERM).exit_code == 143
    finally:
        signals.restore()


def test_every_deployment_carries_the_graceful_shutdown_options(tmp_path: Any) -> None:
    for topology in ("onehop", "split"):
        settings = Settings(
            database_url="sqlite://", data_dir=tmp_path, topology=topology, shutdown_grace_s=12.0
        )
        for spec in deployment_specs(settings):
            assert graceful(spec) == {
                "graceful_shutdown_wait_loop_s": 2.0,
                "graceful_shutdown_timeout_s": 12.0,
            }


def test_drain_report_line() -> None:
    assert DrainReport(1, 3, True, 1.25).line() == (
        "drained 1 ingress replica(s): 3 request(s) in flight at the signal, all finished in 1.2s"
    )
