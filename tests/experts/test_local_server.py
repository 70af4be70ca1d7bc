"""Integration tests against the real local expert server (SmolLM2-135M-Instruct on CPU).
Never asserts what the 135M model says, only the protocol."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from experts.client import OpenAIExpertClient
from experts.local_model import PERSONAS, persona_expert_specs
from experts.pool import ExpertPool
from router.errors import ExpertHTTPError
from router.types import RegistrySnapshot
from tests.experts.helpers import decision, request

pytestmark = pytest.mark.slow


def test_models_and_health(local_server):
    ids = [m["id"] for m in httpx.get(f"{local_server.base_url}/models").json()["data"]]
    assert set(PERSONAS) <= set(ids)
    h = httpx.get(f"{local_server.url}/health").json()
    assert h["status"] == "ok" and h["dtype"] in ("float32", "bfloat16")


def ask(model: str, text: str, max_tokens: int, **more: object) -> dict[str, object]:
    """A greedy one-question chat body."""
    messages = [{"role": "user", "content": text}]
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, **more}


def test_chat_completion_format(local_server):
    r = httpx.post(
        f"{local_server.base_url}/chat/completions",
        timeout=120,
        json=ask("smollm2-math", "What is 3+4?", 6, seed=1),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "smollm2-math"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    u = body["usage"]
    assert u["prompt_tokens"] > 10 and 0 < u["completion_tokens"] <= 6
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_stream_order_and_usage(local_server):
    events = []
    with httpx.stream(
        "POST",
        f"{local_server.base_url}/chat/completions",
        timeout=120,
        json=ask("smollm2-code", "Say hi", 5, stream=True, stream_options={"include_usage": True}),
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line:
                assert line.startswith("data: ")
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish_at = next(i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"])
    assert finish_at == len(chunks) - 2
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 5
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] >= 1 and isinstance(text, str)


def test_errors_are_openai_json(local_server):
    r = httpx.post(f"{local_server.base_url}/chat/completions", json={"model": "nope", "messages": []})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.post(
        f"{local_server.base_url}/chat/completions",
        json={"model": "smollm2-math", "messages": [{"role": "user", "content": "x"}], "top_p": 7},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_p"
    r = httpx.post(f"{local_server.base_url}/chat/completions", content=b"{oops")
    assert r.status_code == 400


async def test_client_and_pool_against_real_server_concurrently(local_server):
    specs = persona_expert_specs(local_server.base_url, max_concurrency=2)
    snap = RegistrySnapshot(revision=1, experts={e.name: e for e in specs}, category_experts={})
    names = [e.name for e in specs]
    async with ExpertPool(snap, health_interval_s=0) as pool:
        assert all(await pool.check_health())
        assert set(await pool.client(names[0]).models()) >= set(PERSONAS)
        req = request("Name a colour.", max_tokens=4, temperature=0)
        results = await asyncio.gather(*(pool.complete(decision(n), req) for n in names[:4]))
        assert [r.expert for r in results] == names[:4]
        assert all(0 < r.usage.completion_tokens <= 4 and r.usage.prompt_tokens > 0 for r in results)
        chunks = [c async for c in pool.stream(decision(names[1]), req)]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 4
        assert all(c.expert == names[1] for c in chunks)
        load = pool.load()
        assert load[names[0]].recent_requests == 1 and load[names[0]].in_flight == 0


async def test_client_maps_unknown_model_to_http_error(local_server):
    from router.types import ExpertInfo

    async with httpx.AsyncClient() as http:
        c = OpenAIExpertClient(ExpertInfo("x", local_server.base_url, "no-such-model"), http)
        with pytest.raises(ExpertHTTPError) as ei:
            await c.chat(request())
    assert ei.value.upstream_status == 404 and not ei.value.retryable


def test_start_refuses_a_busy_port(local_server):
    from experts.local_server import start_local_server
    from router.errors import ExpertConnectionError

    with pytest.raises(ExpertConnectionError, match="in use"):
        start_local_server(local_server.port, timeout=5)
