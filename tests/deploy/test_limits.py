"""Per-key limits through the ingress: two in-process Ingress instances sharing one SQLite registry
(rpm split over the replicas, budget spend shared through the database), the 429 shapes, reset by period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from deploy.pipeline.ingress import Ingress
from deploy.pipeline.limits import KeyLimiter
from deploy.settings import Settings
from experts.types import Usage
from registry import Registry, usage
from registry import repository as repo
from router.errors import QuotaExceeded, RateLimited
from tests.deploy.doubles import FakeGateway, FakeRouter
from tests.deploy.test_ingress import MSG


def make_key(registry: Registry, **limits: Any) -> tuple[str, str]:
    with registry.session() as s:
        rec, plaintext = repo.create_api_key(s, scopes=["query"], name="t")
        usage.set_key_limits(s, key_id=rec.id, **limits)
    return rec.id, plaintext


def settings(tmp_path: Any, **kw: Any) -> Settings:
    return Settings(
        database_url="sqlite://",
        data_dir=tmp_path,
        registry_poll_s=60,
        usage_flush_s=3600,
        access_log=False,
        **kw,
    )


class Replica:
    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://coe")

    async def chat(self, key: str) -> httpx.Response:
        return await self.client.post(
            "/v1/chat/completions", json={"messages": MSG}, headers={"Authorization": f"Bearer {key}"}
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        self.ingress.observer.close()


@pytest.fixture
async def replicas(tmp_path: Any, registry: Registry) -> Any:
    made: list[Replica] = []

    def make(**kw: Any) -> Replica:
        r = Replica(Ingress(settings(tmp_path, **kw), FakeRouter(), FakeGateway(), registry=registry))
        made.append(r)
        return r

    yield make
    for r in made:
        await r.aclose()


async def test_rpm_holds_across_two_replicas_sharing_the_registry(replicas: Any, registry: Registry) -> None:
    key_id, key = make_key(registry, rpm=4)
    a, b = replicas(limits_replicas=2), replicas(limits_replicas=2)
    codes = [(await a.chat(key)).status_code for _ in range(3)] + [
        (await b.chat(key)).status_code for _ in range(3)
    ]
    # each replica admits ceil(4 / 2) = 2 a minute: 4 in all, whatever the spread
    assert codes == [200, 200, 429, 200, 200, 429]
    r = await a.chat(key)
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert key not in r.text


async def test_budget_is_shared_through_the_database_and_refused_with_insufficient_quota(
    replicas: Any, registry: Registry
) -> None:
    # FakeGateway's answers cost 1.6e-5 USD: the budget allows two
    key_id, key = make_key(registry, budget_usd=3e-5, budget_period="day")
    a, b = replicas(), replicas()
    assert (await a.chat(key)).status_code == 200
    assert (await a.chat(key)).status_code == 200
    r = await a.chat(key)  # this replica's own unflushed spend already says no
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "insufficient_quota"
    assert r.json()["error"]["type"] == "insufficient_quota"
    assert "retry-after" not in r.headers
    assert (await b.chat(key)).status_code == 200  # b has not heard of a's spend yet (the documented bound)
    a.ingress.observer.limiter.sync()  # a's batch reaches the database
    b.ingress.observer.limiter.sync()  # b writes its own and reads the total
    assert (await b.chat(key)).status_code == 429
    used = registry.current_usage()[key_id]
    assert used.requests == 3 and used.cost_usd == pytest.approx(4.8e-5)
    assert used.prompt_tokens == 30 and used.completion_tokens == 9


async def test_keys_without_limits_and_an_open_service_are_not_limited(
    replicas: Any, registry: Registry
) -> None:
    a = replicas()
    assert [(await a.chat("anything")).status_code for _ in range(3)] == [200] * 3  # no keys: open
    _, key = make_key(registry)
    assert [(await a.chat(key)).status_code for _ in range(5)] == [200] * 5


def test_budget_resets_with_the_period(registry: Registry) -> None:
    key_id, _ = make_key(registry, budget_usd=1.0, budget_period="day")
    now = [datetime(2026, 12, 1, 23, 0, tzinfo=UTC)]
    limiter = KeyLimiter(registry, wall=lambda: now[0])
    limiter.sync()
    limiter.record(key_id, Usage(5, 5), 1.0)
    with pytest.raises(QuotaExceeded) as exc:
        limiter.check(key_id)
    assert getattr(exc.value, "code", None) == "insufficient_quota"
    limiter.sync()  # written to the 2026-12-01 row
    with pytest.raises(QuotaExceeded):
        limiter.check(key_id)
    now[0] += timedelta(hours=2)  # 01:00 the next day: a new period, nothing spent
    limiter.sync()
    limiter.check(key_id)
    assert limiter.spent(key_id) == 0.0
    # month and total periods
    assert usage.period_start("month", now[0]) == "2026-12-01"
    assert usage.period_start("total", now[0]) == "total"
    with registry.session() as s:
        usage.set_key_limits(s, key_id=key_id, budget_period="total")
    limiter.sync()
    assert limiter.spent(key_id) == 0.0  # "total" starts its own row; the day's spend is history


def test_tpm_window_and_retry_after() -> None:
    class Store:
        def key_limits(self) -> dict[str, Any]:
            from registry.records import KeyLimits

            return {"k1": KeyLimits("k1", tpm=100)}

        def current_usage(self, now: Any = None) -> dict[str, Any]:
            return {}

        def add_usage(self, deltas: Any) -> int:
            return 0

    t = [1000.0]
    limiter = KeyLimiter(Store(), clock=lambda: t[0])
    limiter.sync()
    limiter.check("k1")
    limiter.record("k1", Usage(60, 50), 0.0)  # 110 tokens: over the 100 a minute
    with pytest.raises(RateLimited) as exc:
        limiter.check("k1")
    assert exc.value.code == "rate_limit_exceeded" and exc.value.retry_after_s == pytest.approx(60.0)
    t[0] += 30
    with pytest.raises(RateLimited) as exc:
        limiter.check("k1")
    assert exc.value.retry_after_s == pytest.approx(30.0)
    t[0] += 30
    limiter.check("k1")


def test_limit_options_are_validated(registry: Registry) -> None:
    from router.errors import BadRequest, NotFound

    key_id, _ = make_key(registry)
    with registry.session() as s, pytest.raises(BadRequest):
        usage.set_key_limits(s, key_id=key_id, budget_period="week")
    with registry.session() as s, pytest.raises(BadRequest):
        usage.set_key_limits(s, key_id=key_id, rpm=-1)
    with registry.session() as s, pytest.raises(NotFound):
        usage.set_key_limits(s, key_id="000000000000", rpm=1)
    with registry.session() as s:
        rec = usage.set_key_limits(s, key_id=key_id, rpm=5, budget_usd=2.5)
        assert (rec.rpm, rec.budget_usd, rec.budget_period) == (5, 2.5, "month")
        rec = usage.set_key_limits(s, key_id=key_id, rpm=0)  # 0 clears
        assert rec.rpm is None and rec.budget_usd == 2.5
