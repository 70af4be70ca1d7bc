"""The HTTP entry's defences, in process (deploy/api/security.py): body read timeout, keys only in the
Authorization header and never in logs, per-client backoff of failing keys, /metrics access, CORS off
unless configured, constant-time key comparison."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from typing import Any

import httpx
import pytest

from deploy.api.security import AuthBackoff
from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from registry import repository as repo
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

MSG = [{"role": "user", "content": "What is 2+2?"}]
KEY = "coe_0123456789ab_SECRETsecretSECRETsecretSECRETsecret00"
ADMIN = "coe_ba9876543210_ADMINadminADMINadminADMINadminADMIN0000"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Any, **kw: Any) -> tuple[Ingress, FakeRegistry]:
    settings = Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=0.05, **kw)
    reg = FakeRegistry()
    reg.keys = {KEY: ("query",), ADMIN: ("admin",)}
    return Ingress(settings, FakeRouter(), FakeGateway(), registry=reg, key_ttl_s=0.0), reg


def client(ingress: Ingress, peer: str = "198.51.100.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), client=(peer, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://coe")


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_body_that_never_arrives_gets_408(tmp_path: Any) -> None:
    ingress, _ = make(tmp_path, body_timeout_s=0.05)
    app = ingress.build_asgi_app()
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"1000"),
            *[(b"authorization", f"Bearer {KEY}".encode())],
        ],
        "client": ("198.51.100.7", 5000),
        "server": ("coe", 80),
    }

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the slowloris client: headers, then nothing
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    assert sent[0]["status"] == 408
    err = json.loads(sent[1]["body"])["error"]
    assert err["code"] == "body_timeout" and err["type"] == "invalid_request_error"


async def test_keys_in_the_query_string_are_refused_unverified(tmp_path: Any) -> None:
    ingress, reg = make(tmp_path)
    async with client(ingress) as c:
        for name in ("api_key", "key", "access_token", "API_KEY"):
            r = await c.get(f"/v1/models?{name}={KEY}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "key_in_query", r.text
        r = await c.get(f"/v1/models?api_key={KEY}", headers=bearer(KEY))
        assert r.status_code == 400  # even next to a valid header: the URL copy is a leak to refuse
        assert reg.verify_calls == 0
        assert (await c.get("/v1/models", headers=bearer(KEY))).status_code == 200


async def test_repeated_invalid_keys_back_off_per_client(tmp_path: Any) -> None:
    ingress, reg = make(tmp_path)
    clock = Clock()
    ingress.auth_backoff = AuthBackoff(free=3, base_s=2.0, max_s=8.0, clock=clock)
    async with client(ingress, "203.0.113.9") as bad, client(ingress, "192.0.2.44") as good:
        for _ in range(4):  # 3 free failures, the 4th starts a 2 s block
            assert (await bad.get("/v1/models", headers=bearer("coe_000000000000_guess"))).status_code == 401
        calls = reg.verify_calls
        r = await bad.get("/v1/models", headers=bearer(KEY))
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.json()["error"]["code"] == "too_many_auth_failures"
        assert reg.verify_calls == calls  # a blocked client costs no key verification
        assert (await good.get("/v1/models", headers=bearer(KEY))).status_code == 200  # others unaffected
        clock.now += 2.5
        assert (await bad.get("/v1/models", headers=bearer("coe_000000000000_guess"))).status_code == 401
        r = await bad.get("/v1/models", headers=bearer(KEY))
        assert r.status_code == 429 and r.headers["retry-after"] == "4"  # doubled
        clock.now += 4.5
        assert (await bad.get("/v1/models", headers=bearer(KEY))).status_code == 200
        assert ingress.auth_backoff.failures("203.0.113.9") == 0  # a success clears the record


def test_backoff_is_capped_and_bounded_in_memory() -> None:
    clock = Clock()
    b = AuthBackoff(free=0, base_s=1.0, max_s=5.0, max_clients=3, clock=clock)
    for _ in range(20):
        b.failure("x")
    with pytest.raises(Exception) as exc:
        b.check("x")
    assert getattr(exc.value, "retry_after_s", None) == 5
    for c in ("a", "b", "c"):
        b.failure(c)
    assert b.failures("x") == 0  # evicted: the least recent client goes first


async def test_key_material_never_reaches_the_logs(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    ingress, _ = make(tmp_path)
    secret = KEY.split("_", 2)[2]
    with caplog.at_level(logging.DEBUG):
        async with client(ingress) as c:
            await c.get("/v1/models", headers=bearer(KEY))
            await c.get("/v1/models", headers=bearer(KEY[:-1] + "X"))
            await c.get(f"/v1/models?api_key={KEY}")
            await c.post("/v1/chat/completions", headers=bearer(KEY), json={"model": "auto", "messages": MSG})
            await c.post("/v1/chat/completions", headers=bearer(KEY), content=b"{not json")
    served = [r for r in caplog.records if not r.name.startswith("httpx")]  # httpx: this test's client
    text = "\n".join(f"{r.getMessage()} {r.args}" for r in served)
    assert served  # the service did log (the open-service warning, the rejected requests)
    assert secret not in text and secret[:12] not in text


@pytest.mark.parametrize(
    ("host", "access", "anonymous", "query_key", "admin_key"),
    [
        ("127.0.0.1", "auto", 200, 200, 200),
        ("0.0.0.0", "auto", 401, 403, 200),
        ("0.0.0.0", "open", 200, 200, 200),
        ("127.0.0.1", "admin", 401, 403, 200),
    ],
)
async def test_metrics_exposure_follows_the_setting(
    tmp_path: Any, host: str, access: str, anonymous: int, query_key: int, admin_key: int
) -> None:
    ingress, _ = make(tmp_path, host=host, metrics_access=access)
    async with client(ingress) as c:
        assert (await c.get("/metrics")).status_code == anonymous
        assert (await c.get("/metrics", headers=bearer(KEY))).status_code == query_key
        r = await c.get("/metrics", headers=bearer(ADMIN))
        assert r.status_code == admin_key and "coe_requests_total" in r.text


async def test_cors_is_off_unless_configured(tmp_path: Any) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    ingress, _ = make(tmp_path)
    async with client(ingress) as c:
        r = await c.options("/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = await c.get("/healthz", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers
    ingress, _ = make(tmp_path, cors_origins="https://app.example, https://other.example")
    async with client(ingress) as c:
        r = await c.options("/v1/chat/completions", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = await c.options("/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"})
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_key_hashes_are_compared_in_constant_time(tmp_path: Any) -> None:
    from registry import Registry

    source = inspect.getsource(repo.verify_api_key)
    assert "hmac.compare_digest" in source and "== bytes.fromhex" not in source
    with Registry(f"sqlite:///{tmp_path / 'k.db'}") as reg:
        with reg.session() as s:
            _, plain = repo.create_api_key(s, scopes=["query"])
        assert reg.verify_key(plain) is not None
        last = plain[-1]
        assert reg.verify_key(plain[:-1] + ("A" if last != "A" else "B")) is None  # same length, one char
        assert reg.verify_key(plain + "x") is None
