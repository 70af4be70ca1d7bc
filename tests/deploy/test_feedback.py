"""The decision log and `POST /v1/feedback` through the ingress, on a real SQLite registry: every
completion logged off the request path, feedback accepted / 404 / 400 / stored / exported, and a blocked
database writer that never holds a request up."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from deploy.pipeline.decisions import DecisionLog
from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from registry import Registry
from registry import decisions as dlog
from registry import repository as repo
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter
from tests.deploy.test_ingress import MSG


def settings(tmp_path: Any, **kw: Any) -> Settings:
    return Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=60, access_log=False, **kw)


@pytest.fixture
async def service(tmp_path: Any, registry: Registry) -> Any:
    ingress = Ingress(settings(tmp_path), FakeRouter(), FakeGateway(), registry=registry)
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        yield ingress, c
    ingress.observer.close()


async def test_completions_are_logged_and_feedback_is_stored_and_exported(
    service: Any, registry: Registry
) -> None:
    ingress, c = service
    r = await c.post("/v1/chat/completions", json={"messages": MSG})
    assert r.status_code == 200
    cid = r.json()["id"]
    # an immediate feedback: the handler waits for the writer instead of answering a false 404
    f = await c.post("/v1/feedback", json={"id": cid, "score": 0.75, "comment": "close"})
    assert f.status_code == 200, f.text
    assert f.json() == {"object": "coe.feedback", "id": cid, "score": 0.75, "comment": "close"}
    with registry.session(write=False) as s:
        [d] = dlog.list_decisions(s)
    assert d.id == cid and d.policy == "category" and d.categories[0] == ("math", 0.8)
    assert d.experts == ("math",) and d.answered_by == "math"
    assert d.cost_usd == pytest.approx(1.6e-5) and d.latency_ms > 0 and d.cache is None
    assert d.prompt is None  # COE_LOG_PROMPTS is off
    assert (d.feedback_score, d.feedback_comment) == (0.75, "close")
    rows = dlog.outcome_rows([d])
    assert rows == [
        {
            "id": cid,
            "prompt": None,
            "category": "math",
            "outcomes": {"math": {"quality": 0.75, "cost_usd": d.cost_usd}},
        }
    ]
    # a second score replaces the first
    assert (await c.post("/v1/feedback", json={"id": cid, "score": 1})).status_code == 200
    with registry.session(write=False) as s:
        assert dlog.list_decisions(s)[0].feedback_score == 1.0


async def test_streamed_completions_are_logged_too(service: Any, registry: Registry) -> None:
    ingress, c = service
    r = await c.post("/v1/chat/completions", json={"messages": MSG, "stream": True})
    assert r.status_code == 200
    first = json.loads(r.text.split("\n\n")[0].removeprefix("data: "))
    assert ingress.observer.decisions is not None
    ingress.observer.decisions.wait_written(first["id"], 5.0)
    with registry.session(write=False) as s:
        [d] = dlog.list_decisions(s)
    assert d.id == first["id"] and d.answered_by == "math"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"id": "chatcmpl-unknown", "score": 0.5}, 404, "id"),
        ({"id": "x", "score": 1.5}, 400, "score"),
        ({"id": "x", "score": -0.1}, 400, "score"),
        ({"id": "x", "score": "good"}, 400, "score"),
        ({"id": "x"}, 400, "score"),
        ({"score": 0.5}, 400, "id"),
        ({"id": "x", "score": 0.5, "stars": 5}, 400, "stars"),
    ],
)
async def test_feedback_errors(service: Any, body: dict[str, Any], status: int, param: str) -> None:
    r = await service[1].post("/v1/feedback", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


async def test_feedback_needs_a_query_or_admin_key(service: Any, registry: Registry) -> None:
    ingress, c = service
    with registry.session() as s:
        _, admin = repo.create_api_key(s, scopes=["admin"])
        _, query = repo.create_api_key(s, scopes=["query"])
    ingress.keys.invalidate()
    r = await c.post(
        "/v1/chat/completions", json={"messages": MSG}, headers={"Authorization": f"Bearer {query}"}
    )
    cid = r.json()["id"]
    assert (await c.post("/v1/feedback", json={"id": cid, "score": 0.5})).status_code == 401
    for key in (query, admin):
        f = await c.post(
            "/v1/feedback", json={"id": cid, "score": 0.5}, headers={"Authorization": f"Bearer {key}"}
        )
        assert f.status_code == 200, f.text
    with registry.session(write=False) as s:
        assert dlog.list_decisions(s)[0].key_id == query.split("_")[1]


async def test_prompts_are_logged_only_when_asked(tmp_path: Any, registry: Registry) -> None:
    ingress = Ingress(settings(tmp_path, log_prompts=True), FakeRouter(), FakeGateway(), registry=registry)
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        cid = (await c.post("/v1/chat/completions", json={"messages": MSG})).json()["id"]
    ingress.observer.close()
    with registry.session(write=False) as s:
        [d] = dlog.list_decisions(s)
    assert d.id == cid and d.prompt == "What is 2+2?"


class BlockedRegistry(FakeRegistry):
    """A registry whose decision writes hang until released (a database that stopped answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write_decisions(self, records: Any) -> int:
        self.entered.set()
        self.release.wait(30)
        return super().write_decisions(records)


async def test_a_blocked_decision_writer_never_holds_a_request_up(tmp_path: Any) -> None:
    reg = BlockedRegistry()
    ingress = Ingress(settings(tmp_path, decision_queue=3), FakeRouter(), FakeGateway(), registry=reg)
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
            codes = [
                (await c.post("/v1/chat/completions", json={"messages": MSG})).status_code for _ in range(10)
            ]
            assert codes == [200] * 10
            assert reg.entered.wait(5)  # the writer took the first batch and hangs in the database
            log = ingress.observer.decisions
            # the writer holds one batch (≤ 3), the queue 3 more: the rest were dropped, and counted
            assert log is not None and log.dropped >= 4
            metrics = (await c.get("/metrics")).text
            assert f"coe_decisions_dropped_total {float(log.dropped)}" in metrics
    finally:
        reg.release.set()
        ingress.observer.close()
    assert len(reg.decisions) == 10 - log.dropped  # released: what was queued is written


def test_decision_log_retention(registry: Registry) -> None:
    from datetime import UTC, datetime, timedelta

    from registry.records import DecisionRecord

    now = datetime(2026, 12, 1, tzinfo=UTC)

    def rec(i: int, age_days: float) -> DecisionRecord:
        return DecisionRecord(
            id=f"c{i}",
            created_at=now - timedelta(days=age_days),
            key_id=None,
            policy="category",
            categories=(("math", 0.9),),
            experts=("math",),
            answered_by="math",
            cost_usd=0.0,
            latency_ms=1.0,
        )

    assert registry.write_decisions([rec(i, i) for i in range(10)]) == 10
    assert registry.write_decisions([rec(0, 0)]) == 0  # ids are kept once
    registry.add_feedback(decision_id="c9", score=0.1)
    with registry.session() as s:
        assert dlog.prune_decisions(s, retention_days=7.5, max_rows=None, now=now) == 2  # c8, c9 (+ feedback)
        assert dlog.prune_decisions(s, retention_days=None, max_rows=5, now=now) == 3  # oldest first
        assert [d.id for d in dlog.list_decisions(s, limit=None)] == ["c0", "c1", "c2", "c3", "c4"]


def test_writer_drains_on_close() -> None:
    reg = FakeRegistry()
    log = DecisionLog(reg, max_queue=100)
    from datetime import UTC, datetime

    from registry.records import DecisionRecord

    for i in range(20):
        assert log.submit(
            DecisionRecord(f"d{i}", datetime.now(UTC), None, "category", (), ("math",), "math", 0.0, 1.0)
        )
    log.close()
    assert len(reg.decisions) == 20 and not log.pending("d19")
