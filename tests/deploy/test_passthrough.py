"""The endpoint as a transparent OpenAI proxy, through the real ingress, gateway, expert pool and policies,
with the official `openai` SDK, against fake vLLM servers over real HTTP (tests/fake_vllm.py). The router
double returns fixed category probabilities; the real policies decide.

Every parameter and message shape arrives at the expert unchanged and comes back unchanged; capability and
context-length requirements steer routing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from deploy.pipeline.gateway import Gateway
from deploy.pipeline.ingress import Ingress
from deploy.pipeline.router_service import RouterService
from deploy.settings import Settings
from router.policies import get_policy
from router.types import GENERALIST_TAG, ExpertInfo, RegistrySnapshot
from tests.deploy.doubles import FakeRegistry
from tests.fake_vllm import FINGERPRINT, FakeVLLM

openai = pytest.importorskip("openai")

CATS = ("computer science", "math", "other")
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class FixedRouter:
    """A RouterLike: 'computer science' most likely, then math; the real policies decide."""

    version = "fixed-v1"
    categories = CATS

    def probabilities(self, texts: list[str]) -> Any:
        return np.tile(np.array([0.7, 0.2, 0.1]), (len(texts), 1))

    def decide(self, probs_row: Any, snapshot: Any, load: Any, options: Any) -> Any:
        policy = get_policy(options.policy, router_version=self.version)
        return policy.decide(
            list(zip(CATS, [float(p) for p in probs_row], strict=True)), snapshot, load, options
        )


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeVLLM]]:
    servers = {
        "plain": FakeVLLM(model="plain-model").start(),
        "tooly": FakeVLLM(model="tooly-model").start(),
        "liar": FakeVLLM(model="liar-model", max_context=50).start(),  # says 100k in the registry
        "big": FakeVLLM(model="big-model").start(),
    }
    yield servers
    for s in servers.values():
        s.stop()


def registry_for(fakes: dict[str, FakeVLLM], **caps: tuple[str, ...]) -> FakeRegistry:
    def info(name: str, server: str, **kw: Any) -> ExpertInfo:
        f = fakes[server]
        return ExpertInfo(name, f.base_url, f.model, cost_input_per_m=1.0, cost_output_per_m=1.0, **kw)

    experts = {
        "plain": info("plain", "plain", capabilities=caps.get("plain", ())),
        "tooly": info("tooly", "tooly", capabilities=caps.get("tooly", ("tools", "json", "vision"))),
        "general": info("general", "plain", tags=(GENERALIST_TAG,)),
        "small": info("small", "big", max_context=1000, capabilities=("tools", "json")),
        "liar": info(
            "liar",
            "liar",
            max_context=100_000,
        ),
        "big": info("big", "big", max_context=200_000),
    }
    reg = FakeRegistry()
    reg.snap = RegistrySnapshot(
        1,
        experts,
        {"computer science": ("plain",), "math": ("tooly", "small"), "other": ("general",)},
    )
    return reg


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=30, retries=0)


async def _client(settings: Settings, reg: FakeRegistry) -> tuple[Any, Gateway]:
    router = RouterService(settings, registry=reg, router=FixedRouter())
    gateway = Gateway(settings, registry=reg)
    ingress = Ingress(settings, router, gateway, registry=reg)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ingress.build_asgi_app()), base_url="http://coe"
    )
    sdk = openai.AsyncOpenAI(base_url="http://coe/v1", api_key="none", http_client=http, max_retries=0)
    return sdk, gateway


@pytest.fixture
async def sdk(settings: Settings, fakes: dict[str, FakeVLLM]) -> Any:
    client, gateway = await _client(settings, registry_for(fakes))
    for f in fakes.values():
        f.bodies.clear()
    yield client
    await client.close()
    await gateway.aclose()


def sent_without_model(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "model"}


# ----- everything passes through ------------------------------------------------------------------


async def test_tools_pass_through_and_tool_calls_come_back(sdk: Any, fakes: dict[str, FakeVLLM]) -> None:
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = await sdk.chat.completions.create(
        model="tooly", messages=messages, tools=[TOOL], tool_choice="auto", parallel_tool_calls=False
    )
    body = fakes["tooly"].last()
    assert body["model"] == "tooly-model"
    assert sent_without_model(body) == {
        "messages": messages,
        "tools": [TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "x"}
    assert r.model == "tooly" and r.system_fingerprint == FINGERPRINT
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.model_extra["coe"]["answered_by"] == "tooly"


async def test_streamed_tool_call_deltas_are_relayed(sdk: Any, fakes: dict[str, FakeVLLM]) -> None:
    stream = await sdk.chat.completions.create(
        model="tooly",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    args = "".join(tc.function.arguments or "" for d in deltas for tc in (d.tool_calls or []))
    assert json.loads(args) == {"city": "x"}
    names = [tc.function.name for d in deltas for tc in (d.tool_calls or []) if tc.function.name]
    assert names == ["get_weather"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert {c.model for c in chunks} == {"tooly"}
    assert fakes["tooly"].last()["stream_options"] == {"include_usage": True}


async def test_a_tool_result_turn_arrives_unchanged(sdk: Any, fakes: dict[str, FakeVLLM]) -> None:
    messages = [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather in Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24C"},
    ]
    r = await sdk.chat.completions.create(model="tooly", messages=messages, tools=[TOOL], tool_choice="none")
    assert fakes["tooly"].last()["messages"] == messages
    assert r.choices[0].message.content == "tool said: sunny, 24C"


async def test_json_schema_image_n_logprobs_and_vendor_extras(sdk: Any, fakes: dict[str, FakeVLLM]) -> None:
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}, "why": {"type": "string"}}},
        },
    }
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "How many cats are in this picture?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                },
            ],
        }
    ]
    extras = {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "chat_template_kwargs": {"x": True}}
    r = await sdk.chat.completions.create(
        model="tooly",
        messages=messages,
        response_format=schema,
        n=2,
        logprobs=True,
        top_logprobs=2,
        seed=7,
        stop=["\n\n"],
        logit_bias={"50256": -100},
        max_completion_tokens=64,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        user="u-1",
        metadata={"team": "a"},
        reasoning_effort="low",
        service_tier="auto",
        extra_body=extras,
    )
    body = fakes["tooly"].last()
    assert body["messages"] == messages and body["response_format"] == schema
    for key, value in {
        "n": 2,
        "logprobs": True,
        "top_logprobs": 2,
        "seed": 7,
        "stop": ["\n\n"],
        "logit_bias": {"50256": -100},
        "max_completion_tokens": 64,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "user": "u-1",
        "metadata": {"team": "a"},
        "reasoning_effort": "low",
        "service_tier": "auto",
        **extras,
    }.items():
        assert body[key] == value, key
    assert "routing" not in body
    assert len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1]
    assert json.loads(r.choices[1].message.content) == {"n": 7, "why": "x"}
    assert r.choices[0].logprobs.content[0].top_logprobs[0].logprob == -0.25


async def test_streamed_logprobs_are_relayed(sdk: Any) -> None:
    stream = await sdk.chat.completions.create(
        model="tooly",
        messages=[{"role": "user", "content": "say a b c"}],
        logprobs=True,
        top_logprobs=1,
        stream=True,
    )
    chunks = [c async for c in stream]
    with_lp = [c for c in chunks if c.choices and c.choices[0].logprobs is not None]
    assert with_lp and with_lp[0].choices[0].logprobs.content[0].logprob == -0.25
    assert all(c.usage is None for c in chunks)  # not asked for: the expert's usage chunk is not relayed


async def test_the_experts_own_400_is_relayed(sdk: Any) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.chat.completions.create(
            model="tooly", messages=[{"role": "user", "content": "x"}], response_format={"type": "yaml"}
        )
    assert ei.value.status_code == 400
    assert "unknown response_format 'yaml'" in ei.value.message
    assert ei.value.body["param"] == "response_format"


# ----- capabilities steer routing ---------------------------------------------------------------


async def test_tools_never_reach_an_expert_without_tools(sdk: Any, fakes: dict[str, FakeVLLM]) -> None:
    # 'plain' is ranked first for the most likely category but has no `tools`
    r = await sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Weather?"}], tools=[TOOL]
    )
    assert r.model == "tooly" and fakes["plain"].bodies == []
    reasons = [e["reason"] for e in r.model_extra["coe"]["experts"]]
    assert "serves tools" in reasons[0] and "next category 'math'" in reasons[0]
    r = await sdk.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello?"}])
    assert r.model == "plain"  # plain text still goes to the category's first expert


async def test_tools_requests_are_not_aggregated(sdk: Any) -> None:
    r = await sdk.chat.completions.create(
        model="coe-top-k",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[TOOL],
        extra_body={"routing": {"k": 3, "aggregate": "synthesize"}},
    )
    assert r.model == "tooly" and r.choices[0].finish_reason == "tool_calls"
    assert len(r.model_extra["coe"]["experts"]) == 1 and r.model_extra["coe"]["aggregate"] is None


async def test_a_capability_no_expert_has_is_a_400_naming_it(sdk: Any) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, audio]}]
        )
    assert "'audio'" in ei.value.message and ei.value.body["code"] == "unsupported_capability"


async def test_no_vision_expert_is_a_400_naming_vision(
    settings: Settings, fakes: dict[str, FakeVLLM]
) -> None:
    sdk, gateway = await _client(settings, registry_for(fakes, tooly=("tools", "json")))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    try:
        with pytest.raises(openai.BadRequestError) as ei:
            await sdk.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}],
            )
        assert "'vision'" in ei.value.message and ei.value.body["param"] == "messages"
    finally:
        await sdk.close()
        await gateway.aclose()


async def test_context_length_skips_small_experts_and_fails_over(
    sdk: Any, fakes: dict[str, FakeVLLM]
) -> None:
    # ~1,500 tokens of prompt: 'small' (1,000 declared) is skipped; json narrows to tooly/small
    long = "word " * 1200
    r = await sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": long}], response_format={"type": "json_object"}
    )
    assert r.model == "tooly"
    # by name: 'liar' (declares 100k, holds 50) has no failover -> its context_length_exceeded is relayed
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.chat.completions.create(model="liar", messages=[{"role": "user", "content": long}])
    assert "maximum context length" in ei.value.message
    assert ei.value.body["code"] == "context_length_exceeded"


async def test_context_failover_goes_to_a_larger_expert(
    settings: Settings, fakes: dict[str, FakeVLLM]
) -> None:
    reg = registry_for(fakes)
    reg.snap = RegistrySnapshot(
        2, reg.snap.experts, {"computer science": ("liar", "small", "big"), "math": (), "other": ("general",)}
    )
    sdk, gateway = await _client(settings, reg)
    try:
        r = await sdk.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "word " * 300}]
        )
        assert r.model == "big"
        attempts = r.model_extra["coe"]["attempts"]
        assert attempts[0]["expert"] == "liar" and attempts[0]["status"] == 400
        assert {"expert": "small", "error": "context_too_small", "message": "context_too_small"} in attempts
    finally:
        await sdk.close()
        await gateway.aclose()
