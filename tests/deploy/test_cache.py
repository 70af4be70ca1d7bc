"""The response cache: the store itself (hit, miss, expiry, LRU, semantic threshold) and through the ingress
(deterministic requests only, never with tools unless opted in, isolated by expert and by API key,
streamed or not, counted in /metrics)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from deploy.pipeline.cache import CacheKey, MemoryCache, cache_key, cacheable
from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from experts.types import ChatRequest, ChatResult
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter


def req(text: str = "What is 2+2?", **params: Any) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params=params)


def unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_exact_hit_miss_and_expiry() -> None:
    clock = Clock()
    cache = MemoryCache(mode="exact", ttl_s=10, clock=clock)
    key = cache_key("k", "math", req(temperature=0))
    assert cache.get(key, None) is None
    cache.put(key, None, ChatResult("math", "4"))
    assert cache.get(key, None).content == "4"
    assert cache.get(cache_key("k", "math", req("What is 2+3?", temperature=0)), None) is None
    assert cache.get(cache_key("k", "math", req(temperature=0, user="bob", stream=True)), None) is not None
    assert cache.get(cache_key("k", "math", req(temperature=0, max_tokens=5)), None) is None
    clock.t = 11
    assert cache.get(key, None) is None and len(cache) == 0


def test_lru_eviction() -> None:
    cache = MemoryCache(mode="exact", max_entries=2)
    keys = [cache_key("k", "e", req(f"q{i}")) for i in range(3)]
    cache.put(keys[0], None, ChatResult("e", "0"))
    cache.put(keys[1], None, ChatResult("e", "1"))
    assert cache.get(keys[0], None) is not None  # 0 is now the most recent
    cache.put(keys[2], None, ChatResult("e", "2"))
    assert cache.get(keys[1], None) is None and cache.get(keys[0], None) is not None and len(cache) == 2


def test_semantic_hits_at_the_threshold_and_keeps_the_rest_exact() -> None:
    cache = MemoryCache(mode="semantic", threshold=0.95)
    cache.put(cache_key("k", "e", req("What is 2+2?")), unit(1, 0, 0), ChatResult("e", "4"))
    near, far = unit(1, 0.2, 0), unit(1, 1, 0)  # cosine 0.98 and 0.71
    assert cache.get(cache_key("k", "e", req("what's 2 + 2")), near).content == "4"
    assert cache.get(cache_key("k", "e", req("what's 2 + 2")), far) is None
    assert cache.get(cache_key("k", "other", req("what's 2 + 2")), near) is None  # another expert
    assert cache.get(cache_key("k2", "e", req("what's 2 + 2")), near) is None  # another API key
    assert cache.get(cache_key("k", "e", req("what's 2 + 2", max_tokens=3)), near) is None  # other params
    # the number guard: the same words with another number never hit, however close the embedding
    cache.put(
        cache_key("k", "e", req("I have 3 apples and eat 1. How many are left?")),
        unit(0, 1, 0),
        ChatResult("e", "2"),
    )
    assert (
        cache.get(cache_key("k", "e", req("I have 4 apples and eat 1. How many are left?")), unit(0, 1, 0))
        is None
    )
    assert (
        cache.get(cache_key("k", "e", req("i have 3 apples and eat 1 - how many left")), unit(0, 1, 0))
        is not None
    )
    exact_only = MemoryCache(mode="exact")
    exact_only.put(cache_key("k", "e", req("What is 2+2?")), unit(1, 0, 0), ChatResult("e", "4"))
    assert exact_only.get(cache_key("k", "e", req("what's 2 + 2")), near) is None


@pytest.mark.parametrize(
    ("params", "opt_in", "ok"),
    [
        ({"temperature": 0}, None, True),
        ({"seed": 3, "temperature": 0.7}, None, True),
        ({"temperature": 0.7}, None, False),
        ({}, None, False),
        ({"temperature": 0, "tools": [{"type": "function"}]}, None, False),
        ({"temperature": 0, "tools": [{"type": "function"}]}, True, True),
        ({"temperature": 0.9}, True, True),
        ({"temperature": 0}, False, False),
    ],
)
def test_what_is_cacheable(params: dict, opt_in: bool | None, ok: bool) -> None:
    assert cacheable(params, opt_in) is ok


# ----- through the ingress ------------------------------------------------------------------------


@pytest.fixture
def parts(tmp_path: Any) -> tuple[Ingress, FakeRegistry, FakeGateway]:
    settings = Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=30, cache="semantic")
    reg, gateway = FakeRegistry(), FakeGateway()
    return Ingress(settings, FakeRouter(), gateway, registry=reg), reg, gateway


@pytest.fixture
async def client(parts: Any) -> Any:
    transport = httpx.ASGITransport(app=parts[0].build_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        yield c


def chat(text: str = "What is 2+2?", **kw: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}


async def test_a_repeated_deterministic_question_is_answered_from_the_cache(client: Any, parts: Any) -> None:
    gateway = parts[2]
    first = (await client.post("/v1/chat/completions", json=chat(temperature=0))).json()
    assert first["coe"]["cache"] == "miss" and first["coe"]["cost_usd"] > 0
    second = (await client.post("/v1/chat/completions", json=chat(temperature=0))).json()
    assert len(gateway.requests) == 1
    assert second["coe"]["cache"] == "hit" and second["coe"]["cost_usd"] == 0.0
    assert second["choices"] == first["choices"] and second["id"] != first["id"]
    # the fake router embeds case/punctuation variants alike: a semantic hit
    third = (await client.post("/v1/chat/completions", json=chat("what is 2+2", temperature=0))).json()
    assert third["coe"]["cache"] == "hit" and len(gateway.requests) == 1
    metrics = (await client.get("/metrics")).text
    assert 'coe_cache_lookups_total{result="hit"} 2.0' in metrics
    assert 'coe_cache_lookups_total{result="miss"} 1.0' in metrics


async def test_non_deterministic_and_tool_requests_are_not_cached(client: Any, parts: Any) -> None:
    gateway = parts[2]
    for _ in range(2):
        await client.post("/v1/chat/completions", json=chat(temperature=0.8))
    tools = [{"type": "function", "function": {"name": "f"}}]
    for _ in range(2):
        r = await client.post("/v1/chat/completions", json=chat(temperature=0, tools=tools))
        assert "cache" not in r.json()["coe"]
    assert len(gateway.requests) == 4
    for _ in range(2):  # opting in caches even tools requests
        r = await client.post(
            "/v1/chat/completions", json=chat(temperature=0, tools=tools, routing={"cache": True})
        )
    assert len(gateway.requests) == 5 and r.json()["coe"]["cache"] == "hit"
    metrics = (await client.get("/metrics")).text
    assert 'coe_cache_lookups_total{result="skip"} 4.0' in metrics


async def test_entries_are_isolated_by_expert_and_by_api_key(client: Any, parts: Any) -> None:
    gateway = parts[2]
    await client.post("/v1/chat/completions", json=chat(temperature=0, model="math"))
    await client.post("/v1/chat/completions", json=chat(temperature=0, model="general"))
    assert len(gateway.requests) == 2
    parts[1].keys = {"key-a": ("query",), "key-b": ("query",)}
    parts[0].keys.invalidate()
    for key in ("key-a", "key-b", "key-a"):
        await client.post(
            "/v1/chat/completions", json=chat(temperature=0), headers={"authorization": f"Bearer {key}"}
        )
    assert len(gateway.requests) == 4  # a and b each once; a's repeat is a hit


async def test_streamed_answers_are_stored_and_hits_can_stream(client: Any, parts: Any) -> None:
    gateway = parts[2]
    body = chat(temperature=0, stream=True, stream_options={"include_usage": True})
    miss = await client.post("/v1/chat/completions", json=body)
    events = [json.loads(line[6:]) for line in miss.text.splitlines() if line.startswith("data: {")]
    assert events[0]["coe"]["cache"] == "miss"
    hit = await client.post("/v1/chat/completions", json=body)
    events = [json.loads(line[6:]) for line in hit.text.splitlines() if line.startswith("data: {")]
    assert len(gateway.requests) == 1 and hit.text.rstrip().endswith("data: [DONE]")
    assert events[0]["coe"]["cache"] == "hit"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == "four"
    assert events[-1]["choices"] == [] and events[-1]["coe"]["cost_usd"] == 0.0
    plain = (await client.post("/v1/chat/completions", json=chat(temperature=0))).json()
    assert plain["coe"]["cache"] == "hit" and plain["choices"][0]["message"]["content"] == "four"


async def test_cache_off_by_default(tmp_path: Any) -> None:
    settings = Settings(database_url="sqlite://", data_dir=tmp_path)
    assert settings.cache == "off"
    ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=FakeRegistry())
    assert ingress.cache is None


def test_semantic_hits_compare_vectors_of_one_router_version_only() -> None:
    """After a hot swap the new artifact may embed with its own tuned encoder (router/tuned_encoder.py):
    the old entries' vectors are not compared with the new ones, exact repeats still hit."""
    cache = MemoryCache(mode="semantic", threshold=0.9)
    v = np.array([1.0, 0.0], dtype=np.float32)
    result = ChatResult("e", "hi")
    cache.put(CacheKey(exact="a", frame="f"), v, result, space="old")
    assert cache.get(CacheKey(exact="b", frame="f"), v, space="old") is result
    assert cache.get(CacheKey(exact="b", frame="f"), v, space="new") is None
    assert cache.get(CacheKey(exact="a", frame="f"), v, space="new") is result
