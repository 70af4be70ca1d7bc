"""The ingress as a plain class behind its FastAPI app, with a fake registry, router and gateway:
validation and the error format, auth, model aliases, SSE, readiness, metrics, hot reload."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from deploy.api.protocol import Message, routing_text
from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from router.errors import ExpertTimeout, NoHealthyExpert
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter, assert_chat_metrics

MSG = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(
        database_url="sqlite://",
        data_dir=tmp_path,
        registry_poll_s=0.05,
        max_prompt_chars=2000,
        max_body_bytes=100_000,
    )


@pytest.fixture
def parts(settings: Settings) -> tuple[Ingress, FakeRegistry, FakeRouter, FakeGateway]:
    reg, router, gateway = FakeRegistry(), FakeRouter(), FakeGateway()
    return Ingress(settings, router, gateway, registry=reg), reg, router, gateway


@pytest.fixture
async def client(parts: Any) -> Any:
    ingress = parts[0]
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        yield c


def assert_error(
    r: httpx.Response, status: int, param: str | None, code: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    assert err["message"]
    assert "Traceback" not in r.text
    return err


async def test_chat_completion_routes_and_reports(client: Any, parts: Any) -> None:
    _, _, router, gateway = parts
    r = await client.post("/v1/chat/completions", json={"model": "auto", "messages": MSG, "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "math"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "four"}
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert body["coe"]["cost_usd"] == pytest.approx(1.6e-05)
    assert body["coe"]["categories"][0] == {"category": "math", "probability": 0.8}
    assert body["coe"]["router_version"] == "test-v1"
    assert body["coe"]["timings_ms"]["expert"] == 12.0
    header = json.loads(r.headers["x-coe-route"])
    assert header["experts"] == ["math"] and header["policy"] == "category"
    assert router.calls[0][0] == "What is 2+2?"
    assert gateway.requests[0][1].params == {"max_tokens": 5}


@pytest.mark.parametrize(
    ("model", "policy"),
    [
        ("auto", "category"),
        ("coe-category", "category"),
        ("coe-top-k", "top_k"),
        ("coe-top-p", "top_p"),
        ("coe-cost", "cost_aware"),
        ("coe-quality", "quality"),
    ],
)
async def test_model_aliases_select_policies(client: Any, parts: Any, model: str, policy: str) -> None:
    r = await client.post("/v1/chat/completions", json={"model": model, "messages": MSG})
    assert r.status_code == 200, r.text
    assert parts[2].calls[-1][1].policy == policy


async def test_routing_options_reach_the_router(client: Any, parts: Any) -> None:
    routing = {"policy": "top_k", "k": 2, "aggregate": "vote", "threshold": 0.5, "budget_usd": 0.01}
    r = await client.post("/v1/chat/completions", json={"messages": MSG, "routing": routing})
    assert r.status_code == 200, r.text
    opts = parts[2].calls[-1][1]
    assert (opts.policy, opts.k, opts.aggregate, opts.threshold, opts.budget_usd) == (
        "top_k",
        2,
        "vote",
        0.5,
        0.01,
    )
    assert r.json()["model"] == "coe:vote"


async def test_expert_by_name_bypasses_the_router(client: Any, parts: Any) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "general", "messages": MSG})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "general"
    assert r.json()["coe"]["policy"] == "direct"
    assert parts[2].calls == []


async def test_routing_text_weights_the_last_user_turn() -> None:
    msgs = [
        Message(role="system", content="be nice"),
        Message(role="user", content="first " * 200),
        Message(role="assistant", content="ok"),
        Message(role="user", content="integrate x^2"),
    ]
    text = routing_text(msgs)
    assert text.startswith("integrate x^2")
    assert "be nice" not in text and "ok" not in text.split()
    assert len(text) < 260
    parts = [Message(role="user", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])]
    assert routing_text(parts) == "a\nb"


@pytest.mark.parametrize("model", ["gpt-9", "off"])  # unknown, and a disabled expert
async def test_an_unknown_model_is_404_as_at_openai(client: Any, model: str) -> None:
    r = await client.post("/v1/chat/completions", json={"model": model, "messages": MSG})
    assert_error(r, 404, "model", "model_not_found")


BAD_REQUESTS: list[tuple[str, Any, str | None, str | None]] = [
    ("missing messages", {"model": "auto"}, "messages", "missing_required_parameter"),
    ("empty messages", {"messages": []}, "messages", None),
    ("messages not a list", {"messages": "hi"}, "messages", None),
    ("bad role", {"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role", None),
    ("content wrong type", {"messages": [{"role": "user", "content": 5}]}, "messages.0.content.str", None),
    ("empty model", {"model": " ", "messages": MSG}, "model", None),
    ("unknown policy", {"messages": MSG, "routing": {"policy": "magic"}}, "routing.policy", None),
    (
        "alias vs policy",
        {"model": "coe-top-k", "messages": MSG, "routing": {"policy": "top_p"}},
        "routing.policy",
        None,
    ),
    ("bad k", {"messages": MSG, "routing": {"k": 0}}, "routing.k", None),
    ("bad p", {"messages": MSG, "routing": {"p": 1.5}}, "routing.p", None),
    ("bad aggregate", {"messages": MSG, "routing": {"aggregate": "sum"}}, "routing.aggregate", None),
    ("negative budget", {"messages": MSG, "routing": {"budget_usd": -1}}, "routing.budget_usd", None),
    ("unknown routing key", {"messages": MSG, "routing": {"foo": 1}}, "routing.foo", "unsupported_parameter"),
    ("routing with expert", {"model": "math", "messages": MSG, "routing": {"k": 2}}, "routing", None),
    ("n zero", {"messages": MSG, "n": 0}, "n", None),
    ("tools not a list", {"messages": MSG, "tools": "calculator"}, "tools", None),
    ("response_format without type", {"messages": MSG, "response_format": {}}, "response_format.type", None),
    ("message not an object", {"messages": ["hi"]}, "messages.0", None),
    ("tool role bad content", {"messages": [{"role": "tool", "content": 7}]}, "messages.0.content.str", None),
    ("temperature type", {"messages": MSG, "temperature": "hot"}, "temperature", None),
    ("temperature range", {"messages": MSG, "temperature": 9}, "temperature", None),
    ("stream type", {"messages": MSG, "stream": "yes please"}, "stream", None),
    ("max_tokens zero", {"messages": MSG, "max_tokens": 0}, "max_tokens", None),
    (
        "oversize",
        {"messages": [{"role": "user", "content": "x" * 2001}]},
        "messages",
        "context_length_exceeded",
    ),
]


@pytest.mark.parametrize(("case", "body", "param", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_requests_get_openai_errors(
    client: Any, parts: Any, case: str, body: Any, param: str | None, code: str | None
) -> None:
    r = await client.post("/v1/chat/completions", json=body)
    err = assert_error(r, 400, param, code)
    assert err["type"] == "invalid_request_error"
    assert parts[3].requests == []  # nothing reached an expert


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
async def test_invalid_json_is_a_400(client: Any, raw: bytes) -> None:
    r = await client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, None, "invalid_json")


async def test_huge_body_is_refused_unread(client: Any) -> None:
    r = await client.post("/v1/chat/completions", content=b"x" * (100_000 + 1))
    assert_error(r, 413, None, "request_too_large")


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (NoHealthyExpert("no expert can serve"), 503, "service_unavailable_error"),
        (ExpertTimeout("expert timed out", expert="math"), 504, "upstream_error"),
    ],
)
async def test_expert_failures_map_to_status(
    client: Any, parts: Any, exc: Exception, status: int, kind: str
) -> None:
    parts[3].error = exc
    for stream in (False, True):
        r = await client.post("/v1/chat/completions", json={"messages": MSG, "stream": stream})
        assert assert_error(r, status, None)["type"] == kind


async def test_unexpected_errors_are_clean_500s(client: Any, parts: Any) -> None:
    parts[3].error = RuntimeError("secret internals")  # type: ignore[assignment]
    r = await client.post("/v1/chat/completions", json={"messages": MSG})
    err = assert_error(r, 500, None)
    assert "secret" not in r.text and err["type"] == "internal_error"


async def test_unknown_route_and_method_use_the_error_format(client: Any) -> None:
    assert_error(await client.get("/v1/nope"), 404, None)
    assert_error(await client.get("/v1/chat/completions"), 405, None)


# ----- auth -------------------------------------------------------------------------------------


async def test_open_without_keys_and_locked_with_them(client: Any, parts: Any, caplog: Any) -> None:
    ingress, reg, _, _ = parts
    with caplog.at_level("WARNING", logger="coe.auth"):
        assert (await client.get("/v1/models")).status_code == 200
    assert "OPEN" in caplog.text
    reg.keys = {"sk-good": ("query",), "sk-admin": ("admin",)}
    reg.bump()
    await ingress.refresh()  # the watcher does this on its own; explicit here for determinism
    r = await client.post("/v1/chat/completions", json={"messages": MSG})
    assert assert_error(r, 401, None, "missing_api_key")["type"] == "authentication_error"
    r = await client.get("/v1/models", headers={"authorization": "Bearer sk-wrong"})
    assert_error(r, 401, None, "invalid_api_key")
    r = await client.get("/v1/models", headers={"authorization": "Basic sk-good"})
    assert_error(r, 401, None, "missing_api_key")
    r = await client.post(
        "/v1/chat/completions", json={"messages": MSG}, headers={"authorization": "Bearer sk-admin"}
    )
    assert assert_error(r, 403, None, "insufficient_scope")["type"] == "permission_error"
    for _ in range(3):
        r = await client.post(
            "/v1/chat/completions", json={"messages": MSG}, headers={"authorization": "Bearer sk-good"}
        )
        assert r.status_code == 200
    assert reg.verify_calls == 3  # wrong, admin, good once: the repeats hit the cache
    assert "sk-good" not in caplog.text
    # health endpoints stay open
    assert (await client.get("/healthz")).status_code == 200


# ----- streaming ----------------------------------------------------------------------------------


def sse_events(text: str) -> list[Any]:
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def test_stream_is_openai_sse(client: Any) -> None:
    body = {"messages": MSG, "stream": True, "stream_options": {"include_usage": True}}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert json.loads(r.headers["x-coe-route"])["experts"] == ["math"]
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "math" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["coe"]["router_version"] == "test-v1"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "four"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert "cost_usd" not in chunks[-1]["usage"]  # the usage block is the expert's; CoE's cost is in `coe`
    assert chunks[-1]["coe"]["cost_usd"] == pytest.approx((10 * 1.0 + 2 * 2.0) / 1e6)


async def test_stream_failure_mid_way_ends_with_an_error_event(client: Any, parts: Any) -> None:
    parts[3].mid_stream_error = ExpertTimeout("expert stalled", expert="math")
    r = await client.post("/v1/chat/completions", json={"messages": MSG, "stream": True})
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "upstream_error"


# ----- other endpoints ------------------------------------------------------------------------------


async def test_models_lists_aliases_and_enabled_experts(client: Any, parts: Any) -> None:
    r = await client.get("/v1/models")
    ids = [m["id"] for m in r.json()["data"]]
    assert r.json()["object"] == "list"
    assert ids == [
        "auto",
        "coe-category",
        "coe-top-k",
        "coe-top-p",
        "coe-cost",
        "coe-quality",
        "general",
        "math",
    ]
    assert (await client.get("/v1/models/math")).json()["id"] == "math"
    assert_error(await client.get("/v1/models/off"), 404, "model", "model_not_found")


async def test_route_endpoint_returns_the_decision_only(client: Any, parts: Any) -> None:
    r = await client.post("/v1/route", json={"text": "integrate x", "routing": {"policy": "top_k", "k": 2}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "coe.route" and [e["name"] for e in body["experts"]] == ["math", "general"]
    assert parts[3].requests == []
    r = await client.post("/v1/route", json={"messages": MSG})
    assert r.json()["policy"] == "category"
    assert_error(await client.post("/v1/route", json={}), 400, "messages", "missing_required_parameter")
    assert_error(
        await client.post("/v1/route", json={"text": "x" * 2001}), 400, "text", "context_length_exceeded"
    )


async def test_readyz_needs_router_and_a_usable_expert_and_says_when_the_registry_is_down(
    client: Any, parts: Any
) -> None:
    _, reg, router, gateway = parts
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    gateway.usable = []
    assert (await client.get("/readyz")).status_code == 503
    gateway.usable = ["math"]
    router.ready = False
    assert (await client.get("/readyz")).status_code == 503
    router.ready = True
    reg.fail = True  # serving on the last snapshot: degraded, still ready
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["degraded"] == ["registry"]
    reg.fail = False
    r = await client.get("/readyz")
    assert r.status_code == 200 and "degraded" not in r.json()


async def test_metrics_count_requests_stages_experts_and_decisions(client: Any) -> None:
    await client.post("/v1/chat/completions", json={"messages": MSG})
    await client.post("/v1/chat/completions", json={"messages": []})
    text = (await client.get("/metrics")).text
    assert_chat_metrics(text, " 1.0")
    assert 'coe_route_decisions_total{category="math",expert="math",policy="category"} 1.0' in text
    assert 'coe_expert_tokens_total{expert="math",kind="completion"} 3.0' in text
    assert 'coe_expert_errors_total{expert="x"} 1.0' in text
    assert "coe_route_fallbacks_total 0.0" in text


async def test_registry_change_is_picked_up_by_the_watcher(client: Any, parts: Any) -> None:
    import asyncio

    ingress, reg, _, _ = parts
    assert (
        await client.post("/v1/chat/completions", json={"model": "math", "messages": MSG})
    ).status_code == 200
    reg.bump(disabled=("math",))
    for _ in range(100):  # the background watcher (poll 0.05 s) applies it
        if ingress.snapshot.revision == reg.snap.revision:
            break
        await asyncio.sleep(0.05)
    assert ingress.snapshot.revision == reg.snap.revision
    r = await client.post("/v1/chat/completions", json={"model": "math", "messages": MSG})
    assert_error(r, 404, "model", "model_not_found")
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert "math" not in ids
    await ingress._watcher.aclose()


# ----- the official SDK, in process ------------------------------------------------------------------


async def test_openai_sdk_works_unchanged(parts: Any) -> None:
    import openai

    ingress = parts[0]
    transport = httpx.ASGITransport(app=ingress.build_asgi_app())
    async with httpx.AsyncClient(transport=transport) as http:
        sdk = openai.AsyncOpenAI(base_url="http://coe/v1", api_key="unused", http_client=http, max_retries=0)
        resp = await sdk.chat.completions.create(
            model="auto", messages=MSG, extra_body={"routing": {"policy": "top_k", "k": 2}}
        )
        assert resp.model == "coe:synthesize" and resp.choices[0].message.content == "four"
        assert resp.model_extra["coe"]["policy"] == "top_k"
        stream = await sdk.chat.completions.create(model="math", messages=MSG, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "four"
        models = [m.id async for m in sdk.models.list()]
        assert "coe-top-p" in models
        with pytest.raises(openai.NotFoundError) as info:
            await sdk.chat.completions.create(model="nope", messages=MSG)
        assert info.value.body["param"] == "model"
        await ingress._watcher.aclose()


async def test_the_first_request_of_a_replica_sees_the_registry_of_now(client: Any, parts: Any) -> None:
    # a replica that served nothing since it was built holds the snapshot of that moment; its first
    # request must not be answered on it (an expert removed, or added, since then)
    ingress, reg, _, _ = parts
    reg.bump(disabled=("math",))
    r = await client.post("/v1/chat/completions", json={"model": "math", "messages": MSG})
    assert_error(r, 404, "model", "model_not_found")
    await ingress._watcher.aclose()
