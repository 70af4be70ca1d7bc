"""The three front doors over the one pipeline, in process (the ingress app over httpx.ASGITransport) and
driven by the official SDKs: the openai SDK's `responses` and the anthropic SDK's `messages`, with a
router double whose ranking can change, a gateway double that answers tool calls like a vLLM server, and a
real SQLite registry for stored responses and session affinity."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from registry import Registry
from router.errors import NoHealthyExpert
from router.types import ExpertChoice, RouteDecision, RoutingOptions
from tests.deploy.agent_experts import run_lookup_agent
from tests.deploy.doubles import FakeRegistry, FakeRouter

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "look a word up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
ANTHROPIC_TOOL = {"name": "lookup", "input_schema": TOOL["parameters"]}


class StoreRegistry(FakeRegistry):
    """The fake registry's snapshot and keys, with a real SQLite registry's stored responses and affinity."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.real = Registry(url)
        capable = ("json", "tools", "vision")
        experts = {n: dataclasses.replace(e, capabilities=capable) for n, e in self.snap.experts.items()}
        self.snap = dataclasses.replace(self.snap, experts=experts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class RankedRouter(FakeRouter):
    """The router double, whose first choice the test sets (a registry edit, a new router...)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = "math"

    async def route(self, text: str, options: RoutingOptions) -> RouteDecision:
        self.calls.append((text, options))
        other = "general" if self.first == "math" else "math"
        return RouteDecision(
            categories=(("math", 0.8), ("other", 0.2)),
            experts=(ExpertChoice(self.first, 0.9, reason="test"),),
            alternates=(other,),
            policy=options.policy,
            router_version="test-v1",
        )


def _last_user_text(messages: Any) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return (
                c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if p.get("type") == "text")
            )
    return ""


class ToolGateway:
    """Answers like a vLLM server with tool calling: a call to the first tool while tools are offered and
    the conversation does not end with tool results; otherwise an echo (of the tool result, or the last
    user text). Records which expert got each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ChatRequest]] = []
        self.error: Exception | None = None
        self.mid_stream_error: Exception | None = None

    def _answer(self, expert: str, request: ChatRequest) -> dict[str, Any]:
        n = len(self.requests)
        messages = list(request.messages)
        tools = request.params.get("tools")
        message: dict[str, Any]
        if tools and request.params.get("tool_choice") != "none" and messages[-1].get("role") != "tool":
            name = tools[0]["function"]["name"]
            call = {"id": f"call_{expert}_{n}", "type": "function"}
            call["function"] = {"name": name, "arguments": json.dumps({"q": _last_user_text(messages)})}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        elif messages[-1].get("role") == "tool":
            message, finish = (
                {"role": "assistant", "content": f"{expert} read: {messages[-1]['content']}"},
                "stop",
            )
        else:
            message, finish = (
                {"role": "assistant", "content": f"{expert}: {_last_user_text(messages)}"},
                "stop",
            )
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 1,
            "model": expert,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        }

    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        expert = decision.expert_names[0]
        if self.error is not None:
            raise self.error
        raw = self._answer(expert, request)
        self.requests.append((expert, request))
        message = raw["choices"][0]["message"]
        return ChatResult(
            expert=expert,
            content=message.get("content") or "",
            finish_reason=raw["choices"][0]["finish_reason"],
            usage=Usage(11, 4),
            raw=raw,
        )

    async def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        expert = decision.expert_names[0]
        if self.error is not None:
            raise self.error
        raw = self._answer(expert, request)
        self.requests.append((expert, request))
        message, finish = raw["choices"][0]["message"], raw["choices"][0]["finish_reason"]
        base = {"id": raw["id"], "object": "chat.completion.chunk", "created": 1, "model": expert}

        def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}

        yield ChatChunk(expert=expert, raw=chunk({"role": "assistant", "content": ""}))
        if message.get("content"):
            for piece in (message["content"][:5], message["content"][5:]):
                yield ChatChunk(expert=expert, delta=piece, raw=chunk({"content": piece}))
        for i, call in enumerate(message.get("tool_calls") or []):
            args = call["function"]["arguments"]
            head = {"index": i, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": args[:4]}
            yield ChatChunk(expert=expert, raw=chunk({"tool_calls": [head]}))
            tail = {"index": i, "function": {"arguments": args[4:]}}
            yield ChatChunk(expert=expert, raw=chunk({"tool_calls": [tail]}))
        if self.mid_stream_error is not None:
            raise self.mid_stream_error
        yield ChatChunk(expert=expert, raw=chunk({}, finish))
        usage = {**base, "choices": [], "usage": raw["usage"]}
        yield ChatChunk(expert=expert, finish_reason=finish, usage=Usage(11, 4), raw=usage)

    async def status(self) -> dict[str, Any]:
        return {"revision": 1, "enabled": ["general", "math"], "usable": ["general", "math"]}


@pytest.fixture
def make(tmp_path: Path) -> Any:
    def build(**settings: Any) -> tuple[Ingress, StoreRegistry, RankedRouter, ToolGateway]:
        reg = StoreRegistry(f"sqlite:///{tmp_path / 'coe.db'}")
        router, gateway = RankedRouter(), ToolGateway()
        s = Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=0.05, **settings)
        return Ingress(s, router, gateway, registry=reg), reg, router, gateway

    return build


def http(ingress: Ingress) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://coe")


def oai(ingress: Ingress, key: str = "none") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://coe/v1", api_key=key, http_client=http(ingress), max_retries=0)


def claude(ingress: Ingress, key: str = "none") -> anthropic.AsyncAnthropic:
    # the anthropic SDK speaks httpx2 (its own fork of httpx)
    transport = httpx2.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    client = httpx2.AsyncClient(transport=transport, base_url="http://coe")
    return anthropic.AsyncAnthropic(base_url="http://coe", api_key=key, http_client=client, max_retries=0)


# ----- the Responses API ------------------------------------------------------------------------------


async def test_responses_plain_answer_is_a_response_with_the_trace(make: Any) -> None:
    ingress, _, router, gateway = make()
    r = await oai(ingress).responses.create(model="auto", input="What is 2+2?", instructions="Be brief.")
    assert r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text == "math: What is 2+2?"
    assert r.model == "math" and r.usage is not None and r.usage.input_tokens == 11
    assert (r.model_extra or {})["coe"]["experts"][0]["name"] == "math"
    assert router.calls[0][0] == "What is 2+2?"  # the human's text is what is routed
    sent = gateway.requests[0][1]
    assert sent.messages[0] == {"role": "system", "content": "Be brief."}


async def test_responses_stream_sends_the_event_sequence(make: Any) -> None:
    ingress, *_ = make()
    client = oai(ingress)
    kinds = []
    async with client.responses.stream(model="auto", input="What is 2+2?") as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert final.output_text == "math: What is 2+2?"
    assert (final.model_extra or {})["coe"]["experts"][0][
        "name"
    ] == "math"  # the trace, on the final response
    stored = await client.responses.retrieve(final.id)  # a completed stream is stored
    assert stored.output_text == final.output_text


async def test_function_call_loop_continues_by_previous_response_id(make: Any) -> None:
    ingress, _, _, gateway = make()
    client = oai(ingress)
    first = await client.responses.create(model="auto", input="look up kiwi", tools=[TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "lookup" and json.loads(call.arguments) == {"q": "look up kiwi"}
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "a fruit"}
    second = await client.responses.create(
        model="auto", previous_response_id=first.id, input=[output], tools=[TOOL]
    )
    assert second.output_text == "math read: a fruit"
    assert second.previous_response_id == first.id
    messages = gateway.requests[-1][1].messages
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]  # the stored turn came first
    assert messages[1]["tool_calls"][0]["id"] == call.call_id


async def test_function_call_loop_streamed(make: Any) -> None:
    ingress, *_ = make()
    client = oai(ingress)
    kinds = []
    async with client.responses.stream(model="auto", input="look up kiwi", tools=[TOOL]) as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = next(item for item in final.output if item.type == "function_call")
    assert json.loads(call.arguments) == {"q": "look up kiwi"}


async def test_json_schema_output_reaches_the_expert_as_response_format(make: Any) -> None:
    ingress, _, router, gateway = make()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
    await oai(ingress).responses.create(model="auto", input="2+2 as JSON", text={"format": fmt})
    params = gateway.requests[0][1].params
    assert params["response_format"]["type"] == "json_schema"
    assert params["response_format"]["json_schema"]["schema"] == schema
    assert "json" in router.calls[0][1].needs  # derived the same way as for chat


async def test_stored_responses_belong_to_their_key(make: Any) -> None:
    ingress, reg, *_ = make()
    reg.keys = {"sk-one": ("query",), "sk-two": ("query",)}
    one, two = oai(ingress, "sk-one"), oai(ingress, "sk-two")
    r = await one.responses.create(model="auto", input="hello")
    assert (await one.responses.retrieve(r.id)).id == r.id
    with pytest.raises(openai.NotFoundError):
        await two.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        await two.responses.create(model="auto", input="more", previous_response_id=r.id)
    with pytest.raises(openai.NotFoundError):
        await two.responses.delete(r.id)
    await one.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        await one.responses.retrieve(r.id)


async def test_store_false_keeps_nothing(make: Any) -> None:
    ingress, *_ = make()
    client = oai(ingress)
    r = await client.responses.create(model="auto", input="hello", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(r.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto"}, "input"),
        ({"model": "auto", "input": 5}, "input"),
        ({"model": "auto", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "auto", "input": "x", "tools": [{"type": "web_search"}]}, None),
        ({"model": "auto", "input": "x", "previous_response_id": 7}, "previous_response_id"),
        ({"model": "nope", "input": "x"}, "model"),
    ],
)
async def test_bad_responses_bodies_get_openai_errors(make: Any, body: dict[str, Any], param: Any) -> None:
    ingress, *_ = make()
    async with http(ingress) as c:
        r = await c.post("/v1/responses", json=body)
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] and err["param"].startswith(param), err


async def test_responses_mid_stream_failure_is_an_error_event_and_response_failed(make: Any) -> None:
    ingress, _, _, gateway = make()
    gateway.mid_stream_error = NoHealthyExpert("the expert went away")
    async with http(ingress) as c:
        r = await c.post("/v1/responses", json={"model": "auto", "input": "hello", "stream": True})
    assert r.status_code == 200
    kinds = [line.split(": ", 1)[1] for line in r.text.splitlines() if line.startswith("event: ")]
    assert kinds[-2:] == ["error", "response.failed"]


# ----- the Messages API -------------------------------------------------------------------------------


async def test_messages_text_with_the_anthropic_sdk(make: Any) -> None:
    ingress, *_ = make()
    m = await claude(ingress).messages.create(
        model="auto",
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "What is 2+2?"}],
    )
    assert m.content[0].type == "text" and m.content[0].text == "math: What is 2+2?"
    assert m.stop_reason == "end_turn" and m.usage.input_tokens == 11 and m.model == "math"


async def test_messages_trace_in_headers(make: Any) -> None:
    ingress, *_ = make()
    raw = await claude(ingress).messages.with_raw_response.create(
        model="auto", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert json.loads(raw.headers["x-coe-route"])["experts"] == ["math"]
    assert json.loads(raw.headers["x-coe-trace"])["answered_by"] == "math"


async def test_messages_tool_use_loop(make: Any) -> None:
    ingress, *_ = make()
    client = claude(ingress)
    ask = {"role": "user", "content": "look up kiwi"}
    first = await client.messages.create(model="auto", max_tokens=50, messages=[ask], tools=[ANTHROPIC_TOOL])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "lookup" and use.input == {"q": "look up kiwi"}
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "a fruit"}
    second = await client.messages.create(
        model="auto",
        max_tokens=50,
        tools=[ANTHROPIC_TOOL],
        messages=[
            ask,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
    )
    assert second.content[0].text == "math read: a fruit"


async def test_messages_stream_with_the_anthropic_sdk(make: Any) -> None:
    ingress, *_ = make()
    client = claude(ingress)
    async with client.messages.stream(
        model="auto", max_tokens=50, messages=[{"role": "user", "content": "What is 2+2?"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "math: What is 2+2?" and final.stop_reason == "end_turn"
    async with client.messages.stream(
        model="auto", max_tokens=50, tools=[ANTHROPIC_TOOL], messages=[{"role": "user", "content": "kiwi?"}]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input == {"q": "kiwi?"}


async def test_messages_image_block_needs_vision(make: Any) -> None:
    ingress, _, router, gateway = make()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    content = [image, {"type": "text", "text": "what is this?"}]
    await claude(ingress).messages.create(
        model="auto", max_tokens=20, messages=[{"role": "user", "content": content}]
    )
    assert "vision" in router.calls[0][1].needs
    assert router.calls[0][0] == "what is this?"
    parts = gateway.requests[0][1].messages[-1]["content"]
    assert any(p["type"] == "image_url" for p in parts)


async def test_messages_errors_in_anthropic_shape(make: Any) -> None:
    ingress, reg, _, gateway = make()
    client = claude(ingress)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(model="auto", max_tokens=5, messages=[])
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(
            model="no-such", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    gateway.error = NoHealthyExpert("no healthy expert")
    with pytest.raises(anthropic.APIStatusError) as down:
        await client.messages.create(model="auto", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert down.value.status_code == 503
    assert down.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    gateway.error = None
    async with http(ingress) as c:
        for body in (
            b"{not json",
            b"[1]",
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}',
        ):
            r = await c.post("/v1/messages", content=body)
            assert r.status_code == 400, r.text
            assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    reg.keys = {"sk-good": ("query",)}
    ingress.keys.invalidate()
    with pytest.raises(anthropic.AuthenticationError):
        await claude(ingress, "sk-bad").messages.create(
            model="auto", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    ok = await claude(ingress, "sk-good").messages.create(  # the key in x-api-key
        model="auto", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert ok.content[0].text == "math: x"


async def test_messages_mid_stream_failure_is_an_error_event(make: Any) -> None:
    ingress, _, _, gateway = make()
    gateway.mid_stream_error = NoHealthyExpert("the expert went away")
    body = {"model": "auto", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with http(ingress) as c:
        r = await c.post("/v1/messages", json=body)
    events = [line.split(": ", 1)[1] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "error"


async def test_count_tokens(make: Any) -> None:
    ingress, *_ = make()
    n = await claude(ingress).messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": "x" * 40}]
    )
    assert n.input_tokens == 10


# ----- one pipeline: routing text, needs and aggregation the same way for all three ---------------------


async def test_the_three_doors_route_the_same_text_with_the_same_needs(make: Any) -> None:
    ingress, _, router, _ = make()
    chat_tool = {"type": "function", "function": {"name": "lookup", "parameters": TOOL["parameters"]}}
    await oai(ingress).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "look up kiwi"}], tools=[chat_tool]
    )
    await oai(ingress).responses.create(model="auto", input="look up kiwi", tools=[TOOL])
    await claude(ingress).messages.create(
        model="auto",
        max_tokens=5,
        messages=[{"role": "user", "content": "look up kiwi"}],
        tools=[ANTHROPIC_TOOL],
    )
    assert [c[0] for c in router.calls] == ["look up kiwi"] * 3
    assert [c[1].needs for c in router.calls] == [frozenset({"tools"})] * 3
    assert all(c[1].single for c in router.calls)


# ----- session affinity -------------------------------------------------------------------------------


async def test_a_tool_loop_stays_on_its_expert_after_the_ranking_changes(make: Any) -> None:
    ingress, _, router, gateway = make()
    client = oai(ingress)
    first = await client.responses.create(model="auto", input="look up kiwi", tools=[TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    router.first = "general"  # the ranking changes mid-loop
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "a fruit"}
    second = await client.responses.create(
        model="auto", previous_response_id=first.id, input=[output], tools=[TOOL]
    )
    assert gateway.requests[-1][0] == "math" and second.output_text == "math read: a fruit"
    affinity = (second.model_extra or {})["coe"]["affinity"]
    assert affinity == {"expert": "math", "why": "tool_loop", "applied": True}
    fresh = await client.responses.create(model="auto", input="something new")
    assert fresh.model == "general"  # a new conversation takes the new ranking


async def test_chat_and_messages_tool_loops_stay_too(make: Any) -> None:
    ingress, _, router, gateway = make()
    chat_tool = {"type": "function", "function": {"name": "lookup", "parameters": TOOL["parameters"]}}
    ask = {"role": "user", "content": "look up kiwi"}
    first = await oai(ingress).chat.completions.create(model="auto", messages=[ask], tools=[chat_tool])
    calls = first.choices[0].message.tool_calls
    assert calls
    router.first = "general"
    tool = {"role": "tool", "tool_call_id": calls[0].id, "content": "a fruit"}
    assistant = first.choices[0].message.model_dump(exclude_none=True)
    second = await oai(ingress).chat.completions.create(
        model="auto", messages=[ask, assistant, tool], tools=[chat_tool]
    )
    assert second.model == "math"
    router.first = "math"
    m1 = await claude(ingress).messages.create(
        model="auto", max_tokens=5, messages=[ask], tools=[ANTHROPIC_TOOL]
    )
    use = next(b for b in m1.content if b.type == "tool_use")
    router.first = "general"
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "a fruit"}
    history = [ask, {"role": "assistant", "content": m1.content}, {"role": "user", "content": [result]}]
    m2 = await claude(ingress).messages.create(
        model="auto", max_tokens=5, messages=history, tools=[ANTHROPIC_TOOL]
    )
    assert m2.model == "math" and gateway.requests[-1][0] == "math"


async def test_affinity_off_follows_the_ranking(make: Any) -> None:
    ingress, _, router, gateway = make(session_affinity="off")
    client = oai(ingress)
    first = await client.responses.create(model="auto", input="look up kiwi", tools=[TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    router.first = "general"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "a fruit"}
    second = await client.responses.create(model="auto", previous_response_id=first.id, input=[output])
    assert second.model == "general" and "affinity" not in (second.model_extra or {})["coe"]


async def test_conversation_mode_keeps_every_continuation(make: Any) -> None:
    ingress, _, router, _ = make(session_affinity="conversation")
    client = oai(ingress)
    first = await client.responses.create(model="auto", input="hello")
    router.first = "general"
    second = await client.responses.create(model="auto", input="and then?", previous_response_id=first.id)
    assert second.model == "math"
    assert (second.model_extra or {})["coe"]["affinity"]["why"] == "previous_response"
    async with http(ingress) as c:  # a session key the client gives
        router.first = "math"
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        await c.post("/v1/chat/completions", json=body, headers={"x-coe-session": "s-1"})
        router.first = "general"
        r = await c.post("/v1/chat/completions", json=body, headers={"x-coe-session": "s-1"})
        assert r.json()["model"] == "math" and r.json()["coe"]["affinity"]["why"] == "session"
        r = await c.post("/v1/chat/completions", json=body, headers={"x-coe-session": "s-2"})
        assert r.json()["model"] == "general"


async def test_affinity_yields_when_the_expert_cannot_serve(make: Any) -> None:
    ingress, reg, router, _ = make()
    client = oai(ingress)
    first = await client.responses.create(model="auto", input="look up kiwi", tools=[TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    reg.bump(disabled=("math",))
    await ingress.refresh()
    router.first = "general"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "a fruit"}
    second = await client.responses.create(model="auto", previous_response_id=first.id, input=[output])
    assert second.model == "general"
    affinity = (second.model_extra or {})["coe"]["affinity"]
    assert affinity["applied"] is False and affinity["expert"] == "math" and affinity["reason"]


# ----- an expert that serves the Responses API itself ---------------------------------------------------


def _native_response(body: dict[str, Any]) -> dict[str, Any]:
    """What a vLLM server's /v1/responses answers (the fields the SDK reads)."""
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    last = items[-1]["content"]
    text = last if isinstance(last, str) else last[0]["text"]
    return {
        "id": "resp_upstream",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": body["model"],
        "output": [
            {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": f"native: {text}", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
    }


def _native_events(body: dict[str, Any]) -> bytes:
    final = _native_response(body)
    item = final["output"][0]
    events = [
        {"type": "response.created", "response": {**final, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {"type": "response.content_part.added", "output_index": 0, "item_id": "msg_up", "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "output_index": 0, "item_id": "msg_up", "content_index": 0,
         "delta": item["content"][0]["text"], "logprobs": []},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]  # fmt: skip
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i})}\n\n".encode()
        for i, e in enumerate(events)
    )


async def test_an_expert_that_serves_responses_gets_the_request_natively(make: Any) -> None:
    from deploy.api.native_responses import NativeResponses

    ingress, reg, _, gateway = make()
    experts = dict(reg.snap.experts)
    experts["math"] = dataclasses.replace(experts["math"], capabilities=("responses", "tools"))
    reg.snap = dataclasses.replace(reg.snap, experts=experts, revision=reg.snap.revision + 1)
    await ingress.refresh()
    seen: list[tuple[str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((str(request.url), body))
        if body.get("stream"):
            return httpx.Response(
                200, content=_native_events(body), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=_native_response(body))

    ingress.native = NativeResponses(httpx.MockTransport(handler))
    client = oai(ingress)
    first = await client.responses.create(model="auto", input="hi", instructions="Be brief.")
    url, body = seen[0]
    assert url == "http://127.0.0.1:1/v1/responses"
    assert body == {"model": "m", "input": "hi", "instructions": "Be brief.", "store": False}
    assert first.output_text == "native: hi" and first.model == "math" and first.id.startswith("resp_")
    assert (first.model_extra or {})["coe"]["native"] is True
    assert gateway.requests == []  # never translated to Chat Completions

    second = await client.responses.create(model="auto", input="again", previous_response_id=first.id)
    body = seen[1][1]
    assert "previous_response_id" not in body and body["store"] is False
    assert [i.get("role") for i in body["input"]] == [
        "user",
        "assistant",
        "user",
    ]  # the stored turn, expanded
    assert second.output_text == "native: again"

    async with client.responses.stream(model="auto", input="streamed") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert (
        final.output_text == "native: streamed"
        and final.id.startswith("resp_")
        and final.id != "resp_upstream"
    )
    assert (await client.responses.retrieve(final.id)).output_text == "native: streamed"


async def test_a_native_expert_s_refusal_is_relayed(make: Any) -> None:
    from deploy.api.native_responses import NativeResponses

    ingress, reg, _, _ = make()
    experts = dict(reg.snap.experts)
    experts["math"] = dataclasses.replace(experts["math"], capabilities=("responses",))
    reg.snap = dataclasses.replace(reg.snap, experts=experts, revision=reg.snap.revision + 1)
    await ingress.refresh()
    error = {
        "error": {"message": "bad input", "type": "invalid_request_error", "param": "input", "code": None}
    }
    ingress.native = NativeResponses(httpx.MockTransport(lambda request: httpx.Response(400, json=error)))
    with pytest.raises(openai.BadRequestError) as exc:
        await oai(ingress).responses.create(model="auto", input="hi")
    assert exc.value.body["message"] == "bad input"  # type: ignore[index]
    ingress.native = NativeResponses(httpx.MockTransport(lambda request: httpx.Response(500, text="boom")))
    with pytest.raises(openai.APIStatusError) as exc:
        await oai(ingress).responses.create(model="auto", input="hi")
    assert exc.value.status_code == 502


# ----- the OpenAI Agents SDK with its default (Responses) model -----------------------------------------


async def test_agents_sdk_default_model_runs_a_tool_loop(make: Any) -> None:
    ingress, _, _, gateway = make()
    result, looked_up = await run_lookup_agent(oai(ingress), "look up kiwi", "a fruit")
    assert looked_up == ["look up kiwi"]
    assert result.final_output == "math read: a fruit"
    assert [expert for expert, _ in gateway.requests] == ["math", "math"]


async def test_aggregation_of_plain_text_works_on_every_door(make: Any, tmp_path: Path) -> None:
    from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

    settings = Settings(database_url="sqlite://", data_dir=tmp_path)
    gateway = FakeGateway()  # several experts chosen: answers as CoE's aggregate ("coe:<mode>")
    ingress = Ingress(settings, FakeRouter(), gateway, registry=FakeRegistry())
    routing = {"k": 2, "aggregate": "synthesize"}
    chat = await oai(ingress).chat.completions.create(
        model="coe-top-k", messages=[{"role": "user", "content": "hi"}], extra_body={"routing": routing}
    )
    response = await oai(ingress).responses.create(
        model="coe-top-k", input="hi", extra_body={"routing": routing}
    )
    message = await claude(ingress).messages.create(
        model="coe-top-k", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert [d.expert_names for d, _ in gateway.requests] == [("math", "general")] * 3
    assert chat.model == response.model == message.model == "coe:synthesize"
    assert chat.choices[0].message.content == response.output_text == message.content[0].text == "four"


async def test_conversation_mode_reads_anthropic_user_id_and_prompt_cache_key(make: Any) -> None:
    ingress, _, router, _ = make(session_affinity="conversation")
    ask = [{"role": "user", "content": "hi"}]
    first = await claude(ingress).messages.create(
        model="auto", max_tokens=5, messages=ask, metadata={"user_id": "u-1"}
    )
    keyed = await oai(ingress).responses.create(
        model="auto", input="hi", prompt_cache_key="pk-1", store=False
    )
    assert first.model == keyed.model == "math"
    router.first = "general"
    again = await claude(ingress).messages.create(
        model="auto", max_tokens=5, messages=ask, metadata={"user_id": "u-1"}
    )
    other = await claude(ingress).messages.create(
        model="auto", max_tokens=5, messages=ask, metadata={"user_id": "u-2"}
    )
    keyed_again = await oai(ingress).responses.create(
        model="auto", input="hi", prompt_cache_key="pk-1", store=False
    )
    assert (again.model, other.model, keyed_again.model) == ("math", "general", "math")
    assert (keyed_again.model_extra or {})["coe"]["affinity"]["why"] == "session"
