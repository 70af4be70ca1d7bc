"""Agent traffic end to end: `coe up` (real Ray Serve, both topologies, the real router and the local
SmolLM2 experts) with two tools-capable vLLM-like experts (tests/deploy/agent_experts.py) and one that
serves the Responses API itself, registered through the CLI, driven by the official clients unchanged:
the openai SDK's `responses` (plain, stream, function-call loop, json_schema, previous_response_id), the
anthropic SDK's `messages` (text, tool-use loop, stream, image, errors) and the OpenAI Agents SDK with its
default (Responses) model. A tool loop continued after a registry edit changed the ranking stays on the
expert that opened it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.deploy.agent_experts import AgentVLLM, run_lookup_agent
from tests.deploy.conftest import Service, run_coe
from tests.deploy.test_e2e import eventually, sdk

pytestmark = [pytest.mark.serve, pytest.mark.slow]

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up in the dictionary.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
ANTHROPIC_TOOL = {"name": "lookup", "description": TOOL["description"], "input_schema": TOOL["parameters"]}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def claude(service: Service, key: str = "none") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=service.base, api_key=key, max_retries=0, timeout=120)


def add_expert(service: Service, name: str, server: AgentVLLM, capabilities: str) -> None:
    run_coe(
        service,
        "experts",
        "add",
        name,
        "--url",
        server.base_url,
        "--model",
        server.model,
        "--capabilities",
        capabilities,
        "--max-context",
        "32768",
    )


@pytest.fixture(scope="module")
def experts(service: Service) -> Iterator[dict[str, AgentVLLM]]:
    """tools-a and tools-b (tools, json, vision; mapped to no category, so tool requests reach tools-a
    first: the best fitting expert, by name among equals) and native-r (serves /v1/responses itself)."""
    servers = {
        "tools-a": AgentVLLM(model="tools-a-7b").start(),
        "tools-b": AgentVLLM(model="tools-b-7b").start(),
        "native-r": AgentVLLM(model="native-r-7b", responses=True).start(),
    }
    add_expert(service, "tools-a", servers["tools-a"], "tools,json,vision")
    add_expert(service, "tools-b", servers["tools-b"], "tools,json,vision")
    add_expert(service, "native-r", servers["native-r"], "responses")

    def usable() -> bool:
        ready = httpx.get(f"{service.base}/readyz", timeout=30).json()
        return set(servers) <= set(ready.get("experts", {}).get("usable", []))

    eventually(usable, timeout=90)

    def named() -> bool:  # the ingress's own snapshot (requests by name) has them: it polls on its own
        cards = httpx.get(f"{service.base}/v1/models", timeout=30).json()["data"]
        return set(servers) <= {card["id"] for card in cards}

    eventually(named, timeout=90)

    def routed() -> bool:  # the router's snapshot has them too (split topology: its own poller)
        try:
            return (
                sdk(service).responses.create(model="auto", input="Look up fig", tools=[TOOL]).model
                == "tools-a"
            )
        except openai.BadRequestError:
            return False

    eventually(routed, timeout=90)
    yield servers
    for name, server in servers.items():
        run_coe(service, "experts", "remove", name)
        server.stop()


def _function_call(response: Any) -> Any:
    return next(item for item in response.output if item.type == "function_call")


# ----- the openai SDK: responses ------------------------------------------------------------------------


def test_responses_plain_and_streamed_from_a_local_expert(service: Service) -> None:
    client = sdk(service)
    r = client.responses.create(model="auto", input="What is the capital of France?", max_output_tokens=12)
    assert r.id.startswith("resp_") and r.status in ("completed", "incomplete")
    assert r.output_text.strip() and r.model.startswith("local-")
    assert r.usage is not None and r.usage.output_tokens > 0
    assert (r.model_extra or {})["coe"]["answered_by"] == r.model
    # a small budget may cut the answer: the stream then ends with response.incomplete (as OpenAI's does),
    # which the SDK's get_final_response() does not accept, so the events are read one by one
    events = list(
        client.responses.create(model="auto", input="Name a colour.", max_output_tokens=8, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and kinds[-1] in (
        "response.completed",
        "response.incomplete",
    )
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text.strip()
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_responses_function_loop_json_schema_and_previous_response_id(
    service: Service, experts: dict[str, AgentVLLM]
) -> None:
    client = sdk(service)
    first = client.responses.create(model="auto", input="Look up the word kiwi", tools=[TOOL])
    call = _function_call(first)
    assert first.model == "tools-a" and call.name == "lookup" and json.loads(call.arguments) == {"q": "x"}
    sent = experts["tools-a"].last()
    assert sent["tools"][0]["function"]["name"] == "lookup" and sent["messages"][-1]["role"] == "user"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "a green fruit"}
    second = client.responses.create(
        model="auto", previous_response_id=first.id, input=[output], tools=[TOOL]
    )
    assert second.output_text == "tool said: a green fruit" and second.model == "tools-a"
    roles = [m["role"] for m in experts["tools-a"].last()["messages"]]
    assert roles == ["user", "assistant", "tool"]  # the stored turn was replayed to the expert

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "name": "city", "schema": schema, "strict": True}
    r = client.responses.create(model="auto", input="Which city? Answer in JSON.", text={"format": fmt})
    assert json.loads(r.output_text) == {"city": "x"} and r.model.startswith("tools-")

    kinds = []
    with client.responses.stream(model="auto", input="Look up pear", tools=[TOOL]) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert json.loads(_function_call(final).arguments) == {"q": "x"}


def test_an_expert_that_serves_responses_gets_them_natively(
    service: Service, experts: dict[str, AgentVLLM]
) -> None:
    client = sdk(service)
    first = client.responses.create(model="native-r", input="hello there", instructions="Be brief.")
    body = experts["native-r"].responses_bodies[-1]
    assert body["model"] == "native-r-7b" and body["input"] == "hello there" and body["store"] is False
    assert first.output_text == "native: hello there" and first.model == "native-r"
    assert (first.model_extra or {})["coe"]["native"] is True
    second = client.responses.create(model="native-r", input="and again", previous_response_id=first.id)
    assert "previous_response_id" not in experts["native-r"].responses_bodies[-1]
    assert second.output_text == "native: and again"
    with client.responses.stream(model="native-r", input="streamed") as stream:
        final = stream.get_final_response()
    assert final.output_text == "native: streamed"
    assert client.responses.retrieve(final.id).output_text == "native: streamed"
    assert experts["native-r"].bodies == []  # never translated to Chat Completions


def test_stored_responses_get_and_delete(service: Service) -> None:
    client = sdk(service)
    r = client.responses.create(model="auto", input="Say hi.", max_output_tokens=4)
    assert client.responses.retrieve(r.id).id == r.id
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="auto", input="more", previous_response_id=r.id)


# ----- the anthropic SDK: messages ----------------------------------------------------------------------


def test_messages_text_stream_and_count_tokens(service: Service) -> None:
    client = claude(service)
    m = client.messages.create(
        model="auto",
        max_tokens=12,
        system="Be brief.",
        messages=[{"role": "user", "content": "What is 2+2?"}],
    )
    assert m.content[0].type == "text" and m.content[0].text.strip()
    assert m.stop_reason in ("end_turn", "max_tokens") and m.model.startswith("local-")
    with client.messages.stream(
        model="auto", max_tokens=8, messages=[{"role": "user", "content": "Name a colour."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.usage.output_tokens > 0
    n = client.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "x" * 400}])
    assert n.input_tokens == 100


def test_messages_tool_use_loop_and_image(service: Service, experts: dict[str, AgentVLLM]) -> None:
    client = claude(service)
    ask = {"role": "user", "content": "Look up the word kiwi"}
    first = client.messages.create(model="auto", max_tokens=50, messages=[ask], tools=[ANTHROPIC_TOOL])
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and first.model == "tools-a" and use.input == {"q": "x"}
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "a green fruit"}
    history = [ask, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = client.messages.create(model="auto", max_tokens=50, messages=history, tools=[ANTHROPIC_TOOL])
    assert second.content[0].text == "tool said: a green fruit" and second.stop_reason == "end_turn"

    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    content = [image, {"type": "text", "text": "What is in this picture?"}]
    seen = client.messages.create(
        model="auto", max_tokens=20, messages=[{"role": "user", "content": content}]
    )
    assert seen.model.startswith("tools-")  # vision: only the tools experts declare it
    sent = experts[seen.model].last()["messages"][-1]["content"]
    assert any(p["type"] == "image_url" and PNG in p["image_url"]["url"] for p in sent)

    with client.messages.stream(
        model="auto", max_tokens=50, messages=[ask], tools=[ANTHROPIC_TOOL]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input == {"q": "x"}


def test_messages_errors_in_anthropic_shape(service: Service) -> None:
    client = claude(service)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="auto", max_tokens=5, messages=[])
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    for body in (b"{not json", b"[]", b'{"model": "auto", "max_tokens": "many", "messages": []}'):
        r = httpx.post(f"{service.base}/v1/messages", content=body, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    for body in (b"{not json", b'{"input": 5}', b'{"input": "x", "tools": [{"type": "web_search"}]}'):
        r = httpx.post(f"{service.base}/v1/responses", content=body, timeout=30)
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


# ----- the OpenAI Agents SDK, default model -------------------------------------------------------------


def test_agents_sdk_default_model_tool_loop(service: Service, experts: dict[str, AgentVLLM]) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=f"{service.base}/v1", api_key="none", max_retries=0)
    result, calls = asyncio.run(run_lookup_agent(client, "What does kiwi mean?", "a green fruit"))
    assert calls == ["x"]
    assert result.final_output == "tool said: a green fruit"


# ----- a tool loop stays on its expert --------------------------------------------------------------------


def test_a_tool_loop_stays_on_its_expert_after_the_ranking_changes(
    service: Service, experts: dict[str, AgentVLLM]
) -> None:
    client = sdk(service)
    first = client.responses.create(model="auto", input="Look up the word kiwi", tools=[TOOL])
    assert first.model == "tools-a"
    call = _function_call(first)
    ask = {"role": "user", "content": "Look up the word kiwi"}
    opened = claude(service).messages.create(
        model="auto", max_tokens=50, messages=[ask], tools=[ANTHROPIC_TOOL]
    )
    use = next(b for b in opened.content if b.type == "tool_use")
    categories = json.loads(run_coe(service, "categories", "list", "--json"))
    for c in categories:  # a registry edit: tools-b becomes every category's first choice
        run_coe(service, "categories", "map", c["name"], "tools-b", "--rank", "1")
    try:
        eventually(
            lambda: (
                client.responses.create(model="auto", input="Look up pear", tools=[TOOL]).model == "tools-b"
            )
        )
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "a green fruit"}
        second = client.responses.create(
            model="auto", previous_response_id=first.id, input=[output], tools=[TOOL]
        )
        assert second.model == "tools-a" and second.output_text == "tool said: a green fruit"
        affinity = (second.model_extra or {})["coe"]["affinity"]
        assert affinity["expert"] == "tools-a" and affinity["applied"] is True

        result = {"type": "tool_result", "tool_use_id": use.id, "content": "a green fruit"}
        history = [
            ask,
            {"role": "assistant", "content": opened.content},
            {"role": "user", "content": [result]},
        ]
        raw = claude(service).messages.with_raw_response.create(
            model="auto", max_tokens=50, messages=history, tools=[ANTHROPIC_TOOL]
        )
        assert raw.parse().model == "tools-a"
        assert json.loads(raw.headers["x-coe-trace"])["affinity"]["applied"] is True
    finally:
        for c in categories:
            run_coe(service, "categories", "unmap", c["name"], "tools-b")
