"""The fault suite, in process: the real Ingress app, RouterService, Gateway and ExpertPool, over real
loopback HTTP experts (tests/deploy/stub_expert.py) that fail on purpose. The primary expert `a` fails;
the alternate `b` is healthy, so zero requests may be lost; with `a` alone, each fault is a clean OpenAI
error (or, mid-stream, a clean error event then [DONE]), never a hang or a traceback."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from deploy.pipeline.gateway import Gateway
from deploy.pipeline.ingress import Ingress
from deploy.pipeline.router_service import ARTIFACT_SETTING, RouterService
from deploy.settings import DEFAULT_ROUTER_ARTIFACT, Settings
from router.classifier import load_artifact
from router.types import ExpertChoice, ExpertInfo, RegistrySnapshot, RouteDecision, RoutingOptions
from tests.deploy.doubles import FakeRegistry
from tests.deploy.stub_expert import StubExpert

pytestmark = pytest.mark.faults

MSG = [{"role": "user", "content": "What is 2+2?"}]
LOAD = 24  # concurrent requests per scenario, half of them streamed


class CoreRouter:
    """The router core (no embedder): everything goes to `a`, with `b` as the alternate when it exists."""

    categories = ("math",)

    def __init__(self, version: str, alternates: tuple[str, ...]) -> None:
        self.version = version
        self.alternates = alternates
        self.last_timings_ms: dict[str, float] = {}

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 1))

    def decide(self, _row: Any, _snapshot: Any, _load: Any, options: RoutingOptions) -> RouteDecision:
        return RouteDecision(
            categories=(("math", 1.0),),
            experts=(ExpertChoice("a", 1.0),),
            alternates=self.alternates,
            policy=options.policy,
            router_version=self.version,
        )


class Registry(FakeRegistry):
    def __init__(self, experts: dict[str, str]) -> None:
        super().__init__()
        # 1 s: under the slow stub's 2 s (0.5 s timed out connects to the healthy stub on a loaded box)
        infos = {n: ExpertInfo(n, url, "stub", timeout_s=1.0) for n, url in experts.items()}
        self.snap = RegistrySnapshot(1, infos, {"math": tuple(experts)})

    def snapshot(self) -> RegistrySnapshot:
        if self.fail:
            raise RuntimeError("db down")
        return self.snap


def build(tmp_path: Path, experts: dict[str, str]) -> tuple[Ingress, Registry]:
    settings = Settings(
        database_url="sqlite://",
        data_dir=tmp_path,
        registry_poll_s=0.05,
        retries=0,
        health_interval_s=0,
        breaker_failures=3,
        router_artifact=DEFAULT_ROUTER_ARTIFACT,
    )
    reg = Registry(experts)
    alternates = tuple(n for n in experts if n != "a")

    def loader(path: Any, _settings: Any) -> CoreRouter:
        load_artifact(path)  # the real artifact parser: a corrupt file raises ArtifactError
        return CoreRouter(str(Path(path).name), alternates)

    router = RouterService(settings, registry=reg, loader=loader)
    return Ingress(settings, router, Gateway(settings, registry=reg), registry=reg), reg


async def client(ingress: Ingress) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://coe", timeout=30)


def sse(text: str) -> list[dict[str, Any] | str]:
    out: list[dict[str, Any] | str] = []
    for event in text.split("\n\n"):
        if event.startswith("data: "):
            data = event[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(events: list[Any]) -> str:
    return "".join(
        c["delta"].get("content") or "" for e in events if isinstance(e, dict) for c in e.get("choices", [])
    )


async def one(c: httpx.AsyncClient, stream: bool) -> tuple[int, str, Any]:
    body = {"model": "auto", "messages": MSG, "stream": stream}
    r = await c.post("/v1/chat/completions", json=body)
    if r.status_code != 200:
        return r.status_code, "", r.json()
    if stream:
        events = sse(r.text)
        return 200, streamed_text(events), events
    data = r.json()
    return 200, data["choices"][0]["message"]["content"], data


async def load(c: httpx.AsyncClient, n: int = LOAD) -> list[tuple[int, str, Any]]:
    return list(await asyncio.gather(*(one(c, stream=i % 2 == 1) for i in range(n))))


def assert_all_served_by_b(results: list[tuple[int, str, Any]]) -> None:
    lost = [r for r in results if r[0] != 200 or r[1] != "from b"]
    assert not lost, lost[:3]
    for _status, _text, body in results:
        if isinstance(body, list):  # streamed: no error event, ends with [DONE]
            assert body[-1] == "[DONE]" and not any(isinstance(e, dict) and "error" in e for e in body)


def assert_openai_error(status: int, body: Any, statuses: tuple[int, ...]) -> None:
    assert status in statuses, (status, body)
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]


async def test_expert_killed_under_load_loses_nothing(tmp_path: Path) -> None:
    async with StubExpert("from a", delay_s=30.0) as a, StubExpert("from b") as b:
        ingress, _ = build(tmp_path, {"a": a.base_url, "b": b.base_url})
        async with await client(ingress) as c:
            pending = asyncio.ensure_future(load(c))
            for _ in range(200):  # every request is waiting on `a` when it dies
                if a.hits >= LOAD // 2:
                    break
                await asyncio.sleep(0.01)
            assert a.hits > 0
            await a.kill()
            results = await pending
            assert_all_served_by_b(results)
            assert_all_served_by_b(await load(c))  # and after: `a` is gone, `b` serves
            body = (await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})).json()
            assert [t["expert"] for t in body["coe"]["attempts"]][:1] in (["a"], [])
        await ingress.gateway.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["slow", "500", "garbage", "flaky"])
async def test_failing_expert_loses_nothing_when_another_can_serve(tmp_path: Path, mode: str) -> None:
    async with StubExpert("from a", mode=mode, delay_s=2.0 if mode == "slow" else 0.0) as a:
        async with StubExpert("from b") as b:
            ingress, _ = build(tmp_path, {"a": a.base_url, "b": b.base_url})
            async with await client(ingress) as c:
                results = await load(c)
            if mode == "flaky":  # the ones `a` answered well are `a`'s; none is lost
                assert all(r[0] == 200 and r[1] in ("from a", "from b") for r in results), results[:3]
            else:
                assert_all_served_by_b(results)
            await ingress.gateway.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("mode", "statuses"), [("slow", (504, 503)), ("500", (502, 503)), ("garbage", (502, 503))]
)
async def test_a_lone_failing_expert_gives_clean_openai_errors(
    tmp_path: Path, mode: str, statuses: Any
) -> None:
    async with StubExpert("from a", mode=mode, delay_s=2.0 if mode == "slow" else 0.0) as a:
        ingress, _ = build(tmp_path, {"a": a.base_url})
        async with await client(ingress) as c:
            for status, _text, body in await load(c, 6):
                assert_openai_error(status, body, statuses)
        await ingress.gateway.aclose()  # type: ignore[attr-defined]


async def test_a_stream_cut_mid_way_ends_with_a_clean_error_event(tmp_path: Path) -> None:
    async with StubExpert("from a and more", mode="cut") as a, StubExpert("from b") as b:
        ingress, _ = build(tmp_path, {"a": a.base_url, "b": b.base_url})
        async with await client(ingress) as c:
            status, text, events = await asyncio.wait_for(one(c, stream=True), 10)  # never a hang
        assert status == 200 and text == "from"  # what arrived before the cut, not replayed elsewhere
        errors = [e for e in events if isinstance(e, dict) and "error" in e]
        assert len(errors) == 1 and set(errors[0]["error"]) == {"message", "type", "param", "code"}
        assert events[-1] == "[DONE]"
        await ingress.gateway.aclose()  # type: ignore[attr-defined]


async def test_registry_down_keeps_serving_on_the_last_snapshot(tmp_path: Path) -> None:
    async with StubExpert("from a") as a:
        ingress, reg = build(tmp_path, {"a": a.base_url})
        async with await client(ingress) as c:
            assert (await c.get("/readyz")).json().get("degraded") is None
            reg.fail = True
            r = await c.get("/readyz")
            assert r.status_code == 200, r.text  # still serving: not taken out of the load balancer
            assert r.json()["ready"] is True and r.json()["degraded"] == ["registry"]
            results = await load(c, 8)
            assert all(s == 200 and t == "from a" for s, t, _ in results), results[:2]
            reg.fail = False  # recovery is automatic: the next poll applies new revisions again
            reg.snap = RegistrySnapshot(2, reg.snap.experts, reg.snap.category_experts)
            for _ in range(200):
                if ingress.snapshot.revision == 2:
                    break
                await asyncio.sleep(0.02)
            assert ingress.snapshot.revision == 2
            assert (await c.get("/readyz")).json().get("degraded") is None
        await ingress.gateway.aclose()  # type: ignore[attr-defined]


async def test_corrupt_router_artifact_during_traffic_keeps_the_old_router(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(DEFAULT_ROUTER_ARTIFACT, bad)
    (bad / "model.npz").write_bytes((bad / "model.npz").read_bytes()[:100])
    async with StubExpert("from a") as a:
        ingress, reg = build(tmp_path, {"a": a.base_url})
        async with await client(ingress) as c:
            before = (await c.post("/v1/route", json={"model": "auto", "text": "2+2"})).json()
            pending = asyncio.ensure_future(load(c, 16))
            reg.settings[ARTIFACT_SETTING] = str(bad)
            reg.snap = RegistrySnapshot(2, reg.snap.experts, reg.snap.category_experts)
            results = await pending
            for _ in range(200):
                ready = (await c.get("/readyz")).json()
                if ready["router"].get("last_swap_error"):
                    break
                await asyncio.sleep(0.02)
            assert all(s == 200 for s, _, _ in results)
            swap_error = ready["router"]["last_swap_error"]
            assert "corrupt" in swap_error and "bad" in swap_error
            after = (await c.post("/v1/route", json={"model": "auto", "text": "2+2"})).json()
            assert after["router_version"] == before["router_version"] == "default"
        await ingress.gateway.aclose()  # type: ignore[attr-defined]
