"""The Messages API adapter (deploy/api/anthropic_messages.py): requests to Chat Completions bodies (checked
against the openai SDK's CompletionCreateParams and CoE's chat parser; the requests themselves against the
anthropic SDK's MessageCreateParams), answers and streams back to Messages and events (checked against
anthropic.types, with no undeclared field), errors in Anthropic's shape; and the anthropic SDK driving the
adapter over HTTP (httpx2.MockTransport, the transport of the SDK's httpx2: its real request building and SSE
parsing) with a chat expert double."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from anthropic.types import Message, MessageCreateParams, MessageTokensCount, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from deploy.api.anthropic_messages import (
    ERROR_TYPES,
    AnthropicError,
    CountTokensBody,
    MessagesBody,
    MessagesStream,
    count_tokens,
    error_body,
    from_chat,
    sse,
    to_chat,
)
from deploy.api.protocol import ChatCompletionBody
from router.errors import BadRequest
from tests.deploy import adapter_kit as kit

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
CREATE: TypeAdapter[Any] = TypeAdapter(MessageCreateParams)
TOOL = {"name": "lookup", "description": "look up", "input_schema": {"type": "object"}}
PNG = "iVBORw0KGgo="


def chat_of(body: dict[str, Any]) -> dict[str, Any]:
    full = {"model": "auto", "max_tokens": 100, **body}
    kit.drain(CREATE.validate_python(full))  # a body the anthropic SDK could send
    chat = to_chat(full)
    kit.valid_chat_body(chat, extras=("top_k",))
    return chat


def message(obj: dict[str, Any]) -> Message:
    model = Message.model_validate(obj)
    assert kit.unknown_fields(model) == []
    return model


def events_valid(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    for name, data in events:
        assert data["type"] == name
        if name == "ping":
            continue
        if name == "error":
            ErrorResponse.model_validate(data)
            continue
        assert kit.unknown_fields(EVENTS.validate_python(data)) == [], name
    # content blocks open and close one at a time, with increasing indexes
    open_index, last = None, -1
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == last + 1
            open_index = last = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None or events[-1][0] == "error"
    return [name for name, _ in events]


# ----- request --------------------------------------------------------------------------------------------


def test_text_and_system_string() -> None:
    chat = chat_of({"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]})
    assert chat == {
        "model": "auto",
        "max_tokens": 100,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


def test_system_blocks_are_joined() -> None:
    system = [
        {"type": "text", "text": "One."},
        {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}},
    ]
    chat = chat_of({"system": system, "messages": [{"role": "user", "content": "Hi"}]})
    assert chat["messages"][0] == {"role": "system", "content": "One.\nTwo."}


def test_image_and_document_blocks() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "title": "a.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
    ]
    chat = chat_of({"messages": [{"role": "user", "content": content}]})
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                },
            ],
        }
    ]
    assert ChatCompletionBody.model_validate(chat).needs() == {"vision"}


def test_tool_use_and_tool_result_blocks() -> None:
    """tool_use -> one assistant turn with tool_calls (ids kept: the affinity keys); tool_result -> tool
    messages first, then the rest of the user turn (with any image a tool returned)."""
    chat = chat_of(
        {
            "tools": [{**TOOL, "name": "weather"}],
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "toolu_b", "name": "weather", "input": {"city": "Rome"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_b",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "sensor down"},
                                {
                                    "type": "image",
                                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                                },
                            ],
                        },
                        {"type": "text", "text": "Summarise."},
                    ],
                },
            ],
        }
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                kit.tool_call("toolu_a", "weather", '{"city": "Paris"}'),
                kit.tool_call("toolu_b", "weather", '{"city": "Rome"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_b", "content": "Error: sensor down"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "Summarise."},
            ],
        },
    ]
    assert "tools" in ChatCompletionBody.model_validate(chat).needs()


def test_a_user_turn_of_tool_results_only_is_tool_messages_only() -> None:
    chat = chat_of(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
            ],
            "tools": [TOOL],
        }
    )
    assert chat["messages"][1]["content"] is None
    assert chat["messages"][2:] == [{"role": "tool", "tool_call_id": "t1", "content": ""}]


def test_an_empty_assistant_turn_keeps_string_content() -> None:
    chat = chat_of(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "b"},
            ]
        }
    )
    assert chat["messages"][1] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "lookup"},
            {"tool_choice": {"type": "function", "function": {"name": "lookup"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        ({"type": "any", "disable_parallel_tool_use": False}, {"tool_choice": "required"}),
    ],
)
def test_tools_and_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    chat = chat_of({"messages": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": choice})
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object"}, "description": "look up"},
        }
    ]
    assert {k: chat[k] for k in ("tool_choice", "parallel_tool_calls") if k in chat} == expected


def test_limits_sampling_metadata_and_stream() -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 64,
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "session-7"},
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "service_tier": "auto",
    }
    chat = chat_of(body)
    assert {k: v for k, v in chat.items() if k not in ("model", "messages")} == {
        "max_tokens": 64,
        "stop": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "user": "session-7",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def bad(**fields: Any) -> dict[str, Any]:
    """A Messages body, good but for `fields`."""
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **fields}


BAD = [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5}, "messages"),
    (bad(messages=[]), "messages"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    (bad(max_tokens=0), "max_tokens"),
    (bad(max_tokens="5"), "max_tokens"),
    (bad(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    (bad(temperature=1.5), "temperature"),
    (bad(stream="yes"), "stream"),
    (bad(n=2), "n"),
    (bad(system=[{"type": "image"}]), "system.0"),
    (bad(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type"),
    (bad(tools=[{"name": "f"}]), "tools.0"),
    (bad(tool_choice={"type": "tool"}), "tool_choice"),
    (bad(messages=[{"role": "user", "content": []}]), "messages.0.content"),
    (bad(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages.0.content.0.type"),
    (
        bad(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}],
                }
            ]
        ),
        "messages.0.content.0.source",
    ),
    (
        bad(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}],
                }
            ]
        ),
        "messages.0.content.0.source",
    ),
    (
        bad(messages=[{"role": "user", "content": [{"type": "tool_result"}]}]),
        "messages.0.content.0.tool_use_id",
    ),
    (bad(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages.0.content.0.text"),
    (
        bad(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t"}]}]),
        "messages.0.content.0",
    ),
    (bad(messages=[{"role": "assistant", "content": [{"type": "image"}]}]), "messages.0.content.0.type"),
    (
        bad(
            messages=[
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}
            ]
        ),
        "messages.0.content.0",
    ),
    (
        bad(messages=[{"role": "user", "content": [{"type": "image", "source": "https://x/cat.png"}]}]),
        "messages.0.content.0.source",
    ),
    (
        bad(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": ["plain string"]}],
                }
            ]
        ),
        "messages.0.content.0.content.0.type",
    ),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_bodies_raise_anthropic_errors(body: dict[str, Any], param: str) -> None:
    with pytest.raises(AnthropicError) as info:
        to_chat(body)
    err = info.value
    assert isinstance(err, BadRequest)  # in the one exception tree: 400 everywhere
    assert (err.status, err.error_type, err.param) == (400, "invalid_request_error", param)
    parsed = ErrorResponse.model_validate(err.body())
    assert parsed.error.type == "invalid_request_error" and parsed.error.message == err.message


@pytest.mark.parametrize("status", sorted(ERROR_TYPES))
def test_error_body_per_status(status: int) -> None:
    body = error_body(status, "nope")
    assert body == {"type": "error", "error": {"type": ERROR_TYPES[status], "message": "nope"}}
    if status != 413:  # request_too_large is documented, but not in the SDK's ErrorObject union
        assert ErrorResponse.model_validate(body).error.type == ERROR_TYPES[status]


def test_error_types_named_by_the_brief_and_defaults() -> None:
    assert [ERROR_TYPES[s] for s in (400, 401, 403, 404, 413, 429, 500, 503, 529)] == [
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "overloaded_error",
    ]
    assert error_body(409, "x")["error"]["type"] == "invalid_request_error"
    assert error_body(502, "x")["error"]["type"] == "api_error"


def test_count_tokens_is_the_chat_endpoints_prompt_estimate() -> None:
    body = {"model": "auto", "system": "Sys.", "messages": [{"role": "user", "content": "x" * 400}]}
    n = count_tokens(body)  # no max_tokens: count_tokens does not take one
    chat = to_chat({**body, "max_tokens": 1})
    assert n == ChatCompletionBody.model_validate(chat).context_tokens() - 1 == 101
    assert count_tokens({**body, "tools": [TOOL]}) > n
    assert MessageTokensCount.model_validate({"input_tokens": n}).input_tokens == n
    with pytest.raises(AnthropicError):
        count_tokens({"model": "auto", "messages": []})


def test_request_model_documents_the_fields() -> None:
    schema = MessagesBody.model_json_schema()
    assert {"model", "messages", "max_tokens", "system", "tools", "tool_choice", "stop_sequences"} <= set(
        schema["properties"]
    )
    assert schema["required"] == ["model", "messages", "max_tokens"]
    assert CountTokensBody.model_json_schema()["required"] == ["model", "messages"]


# ----- response ---------------------------------------------------------------------------------------------


def test_text_answer() -> None:
    m = message(from_chat(kit.chat_reply({"content": "Hello!"}), message_id="msg_1", model="claude-x"))
    assert (m.id, m.model, m.role, m.stop_reason, m.stop_sequence) == (
        "msg_1",
        "claude-x",
        "assistant",
        "end_turn",
        None,
    )
    assert [b.model_dump(exclude_none=True) for b in m.content] == [{"type": "text", "text": "Hello!"}]
    assert m.usage.model_dump(exclude_none=True) == {
        "input_tokens": 11,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }


def test_parallel_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        kit.tool_call("call_1", "weather", '{"city":"Paris"}'),
        kit.tool_call(None, "weather", "not json"),
    ]
    m = message(
        from_chat(
            kit.chat_reply({"content": "Checking.", "tool_calls": calls}, "tool_calls"),
            message_id="msg_9",
            model="m",
        )
    )
    assert m.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in m.content] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_9_1", "name": "weather", "input": {}},
    ]


@pytest.mark.parametrize(
    ("finish", "matched", "reason", "sequence"),
    [
        ("stop", None, "end_turn", None),
        ("stop", "\n\nHuman:", "stop_sequence", "\n\nHuman:"),
        ("stop", 128001, "end_turn", None),  # vLLM: a stop token id, not one of the client's strings
        ("length", None, "max_tokens", None),
        ("tool_calls", None, "tool_use", None),
        ("content_filter", None, "refusal", None),
    ],
)
def test_stop_reasons(finish: str, matched: Any, reason: str, sequence: str | None) -> None:
    m = message(
        from_chat(
            kit.chat_reply({"content": "x"}, finish, stop_reason=matched), message_id="msg_1", model="m"
        )
    )
    assert (m.stop_reason, m.stop_sequence) == (reason, sequence)


def test_only_choice_zero_is_read() -> None:
    chat = kit.chat_reply({"content": "first"})
    chat["choices"].insert(
        0, {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "stop"}
    )
    m = message(from_chat(chat, message_id="msg_1", model="m"))
    assert m.content[0].text == "first"  # type: ignore[union-attr]


# ----- stream ---------------------------------------------------------------------------------------------


def run_stream(chat_chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    s = MessagesStream("msg_s", "claude-x")
    return s.start() + [e for c in chat_chunks for e in s.feed(c)] + s.finish()


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The final Message from the events, as a client builds it."""
    msg: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            msg = json.loads(json.dumps(data["message"]))
        elif name == "content_block_start":
            msg["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            d = data["delta"]
            if d["type"] == "text_delta":
                msg["content"][data["index"]]["text"] += d["text"]
            else:
                partial[data["index"]] = partial.get(data["index"], "") + d["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            msg["content"][data["index"]]["input"] = json.loads(partial[data["index"]])
        elif name == "message_delta":
            msg.update(data["delta"])
            msg["usage"].update(data["usage"])
    return msg


def test_text_stream_event_sequence() -> None:
    chat = to_chat(
        {
            "model": "auto",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "hi there"}],
        }
    )
    events = run_stream(kit.chunks(chat))
    names = events_valid(events)
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    whole = from_chat(kit.answer(chat), message_id="msg_s", model="claude-x")
    assert accumulate(events) == whole
    assert Message.model_validate(accumulate(events)).content[0].text == "echo: hi there"  # type: ignore[union-attr]


def test_tool_use_stream_with_arguments_across_chunks() -> None:
    chat = to_chat(
        {
            "model": "auto",
            "max_tokens": 50,
            "stream": True,
            "tools": [TOOL, {**TOOL, "name": "other"}],
            "messages": [{"role": "user", "content": "q"}],
        }
    )
    events = run_stream(kit.chunks(chat))
    names = events_valid(events)
    assert names.count("content_block_start") == 2
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert len(deltas) == 4 and {d["type"] for d in deltas} == {"input_json_delta"}
    assert accumulate(events) == from_chat(kit.answer(chat), message_id="msg_s", model="claude-x")
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_text_then_several_tool_calls_in_one_chunk() -> None:
    events = run_stream(
        [
            kit.delta_chunk({"content": "Let me check."}),
            kit.delta_chunk(
                {
                    "tool_calls": [
                        kit.tool_call("call_a", "f", '{"x":1}', 0),
                        kit.tool_call("call_b", "g", "{}", 1),
                    ]
                }
            ),
            kit.delta_chunk({}, "tool_calls"),
            kit.usage_chunk({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
        ]
    )
    events_valid(events)
    msg = Message.model_validate(accumulate(events))
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.input) for b in msg.content[1:]] == [("call_a", {"x": 1}), ("call_b", {})]  # type: ignore[union-attr]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (9, 3)


def test_stop_sequence_and_length_in_a_stream() -> None:
    events = run_stream([kit.delta_chunk({"content": "a"}), kit.delta_chunk({}, "stop", stop_reason="END")])
    events_valid(events)
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    events = run_stream([kit.delta_chunk({"content": "a"}), kit.delta_chunk({}, "length")])
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_empty_answer_and_other_choices() -> None:
    other = kit.delta_chunk({"content": "nope"})
    other["choices"][0]["index"] = 1
    events = run_stream([other, kit.delta_chunk({}, "stop")])
    assert events_valid(events) == ["message_start", "ping", "message_delta", "message_stop"]


def test_fail_is_an_error_event_in_anthropics_shape() -> None:
    s = MessagesStream("msg_f", "m")
    events = s.start() + s.feed(kit.delta_chunk({"content": "par"})) + s.fail(503, "no healthy expert")
    assert events_valid(events)[-1] == "error"
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "no healthy expert"},
    }


def test_sse_frames() -> None:
    frame = sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "é"}},
    )
    assert frame.startswith(b"event: content_block_delta\ndata: {") and frame.endswith(b"}\n\n")


# ----- the anthropic SDK over HTTP --------------------------------------------------------------------------


class Service:
    """/v1/messages and /v1/messages/count_tokens made of the adapter and the expert double."""

    def __init__(self, expert: Any = kit.Double) -> None:
        self.expert = expert
        self.chats: list[dict[str, Any]] = []
        self.headers: list[httpx2.Headers] = []
        self.replies: list[Any] = []  # the expert's answer, or its chunks

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.headers.append(request.headers)
        try:
            if request.url.path == "/v1/messages/count_tokens":
                return httpx2.Response(200, json={"input_tokens": count_tokens(body)})
            assert request.url.path == "/v1/messages"
            chat = to_chat(body)
        except AnthropicError as exc:
            return httpx2.Response(exc.status, json=exc.body())
        kit.valid_chat_body(chat, extras=("top_k",))
        self.chats.append(chat)
        mid = f"msg_{len(self.chats)}"
        if not chat.get("stream"):
            self.replies.append(self.expert.answer(chat))
            return httpx2.Response(200, json=from_chat(self.replies[-1], message_id=mid, model=body["model"]))
        s = MessagesStream(mid, body["model"])
        self.replies.append(self.expert.chunks(chat))
        events = s.start() + [e for c in self.replies[-1] for e in s.feed(c)] + s.finish()
        return httpx2.Response(
            200, content=b"".join(sse(n, d) for n, d in events), headers={"content-type": "text/event-stream"}
        )


def sdk_client(service: Service) -> Any:
    """The anthropic SDK, its requests answered by `service` in process."""
    import anthropic

    return anthropic.Anthropic(
        api_key="k", base_url="http://coe.test", http_client=kit.mock_http(service), max_retries=0
    )


service, client = kit.sdk_fixtures(Service, sdk_client)


def test_sdk_text(client: Any, service: Service) -> None:
    m = client.messages.create(
        model="claude-x",
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "capital of France?"}],
    )
    assert (m.content[0].text, m.stop_reason, m.model) == ("echo: capital of France?", "end_turn", "claude-x")
    # anthropic 2.x sends the key as a bearer token (older SDKs and Claude Code: x-api-key)
    assert service.headers[-1]["authorization"] == "Bearer k"


def test_sdk_tool_use_loop(client: Any) -> None:
    tools = [
        {
            "name": "lookup",
            "description": "look up",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "population of Lyon"}]
    first = client.messages.create(model="claude-x", max_tokens=50, tools=tools, messages=messages)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert (use.name, use.input) == ("lookup", {"q": "population of Lyon"})
    messages += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "522,000"}]},
    ]
    second = client.messages.create(model="claude-x", max_tokens=50, tools=tools, messages=messages)
    assert (second.content[0].text, second.stop_reason) == ("echo: 522,000", "end_turn")


def test_sdk_stream_text_and_tool_use(client: Any) -> None:
    with client.messages.stream(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "stream me"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == final.content[0].text == "echo: stream me"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    with client.messages.stream(model="claude-x", max_tokens=50, tools=tools,
                                messages=[{"role": "user", "content": "q"}]) as s:  # fmt: skip
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"q": "q"}


def test_sdk_image(client: Any, service: Service) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    m = client.messages.create(
        model="claude-x",
        max_tokens=50,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
    )
    assert m.content[0].text == "echo: what?"
    assert service.chats[-1]["messages"][0]["content"][0]["type"] == "image_url"


def test_sdk_errors_and_count_tokens(client: Any) -> None:
    import anthropic

    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="claude-x", max_tokens=50, messages=[{"role": "user", "content": [{"type": "video"}]}]
        )
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    counted = client.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "x" * 40}])
    assert counted.input_tokens == 10


# ----- real Chat Completions servers behind the adapter --------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_like_expert_tool_use_loop(fake_vllm: kit.HttpExpert, stream: bool) -> None:
    """vLLM's tool-call answers (its stream splits the arguments in two deltas) through the adapter."""
    client = sdk_client(Service(fake_vllm))
    tools = [
        {"name": "lookup", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    ]
    messages: list[Any] = [{"role": "user", "content": "population of Lyon"}]
    if stream:
        with client.messages.stream(model="claude-x", max_tokens=50, tools=tools, messages=messages) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(model="claude-x", max_tokens=50, tools=tools, messages=messages)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert (use.name, use.input) == ("lookup", {"city": "x"})
    messages += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "522,000"}]},
    ]
    second = client.messages.create(
        model="claude-x", max_tokens=50, tools=tools, tool_choice={"type": "none"}, messages=messages
    )
    assert (second.content[0].text, second.stop_reason) == ("tool said: 522,000", "end_turn")


def test_vllm_like_expert_image(fake_vllm: kit.HttpExpert) -> None:
    client = sdk_client(Service(fake_vllm))
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    m = client.messages.create(
        model="claude-x",
        max_tokens=50,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
    )
    assert m.content[0].text == "echo: [image] what?"  # the image reached the expert as an image part


@pytest.mark.slow
def test_real_model_plain_and_streamed(smollm: kit.HttpExpert) -> None:
    """SmolLM2's own answers, stop reasons and token counts come back unchanged, plain and streamed."""
    service = Service(smollm)
    client = sdk_client(service)
    m = client.messages.create(
        model="claude-x",
        max_tokens=8,
        messages=[{"role": "user", "content": "Name a colour."}],
    )
    reply = service.replies[-1]
    assert m.content[0].text == reply["choices"][0]["message"]["content"]
    assert m.stop_reason == ("max_tokens" if reply["choices"][0]["finish_reason"] == "length" else "end_turn")
    assert (m.usage.input_tokens, m.usage.output_tokens) == (
        reply["usage"]["prompt_tokens"],
        reply["usage"]["completion_tokens"],
    )
    with client.messages.stream(
        model="claude-x",
        max_tokens=8,
        messages=[{"role": "user", "content": "Name a colour."}],
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    sent = "".join(c["choices"][0]["delta"].get("content") or "" for c in service.replies[-1] if c["choices"])
    assert text == final.content[0].text == sent and text
    assert final.usage.output_tokens > 0 and final.stop_reason in ("max_tokens", "end_turn")


# ----- any body: a Chat Completions body or a 400 ---------------------------------------------------------


def bodies() -> Any:
    """Messages bodies whose every field may be a wrong value: blocks keep a known type more often than
    not, so the draws reach the translation of each kind."""
    values = kit.json_values()
    text = st.text(max_size=3) | values
    source = st.fixed_dictionaries(
        {"type": st.sampled_from(["base64", "url", "file"])},
        optional={"data": text, "url": text, "media_type": text, "file_id": text},
    )
    inner = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image", "document", "x"])},
        optional={"text": text, "source": source | values, "title": text},
    )
    block = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking", "x"])},
        optional={
            "text": text,
            "source": source | values,
            "id": text,
            "name": text,
            "input": values,
            "tool_use_id": text,
            "content": st.lists(inner, max_size=2) | text,
            "is_error": values,
        },
    )
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant"]) | values,
            "content": st.lists(block, max_size=3) | text,
        }
    )
    tool = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["custom", "bash_20250124"]),
            "name": text,
            "input_schema": values,
            "description": text,
        },
    )
    choice = st.fixed_dictionaries(
        {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])},
        optional={"name": text, "disable_parallel_tool_use": values},
    )
    # top-level fields mostly well-typed, so the draws reach the blocks; wrong values live inside them
    optional = {
        "system": st.text(max_size=3) | st.lists(inner, max_size=2),
        "tools": st.lists(tool, max_size=2),
        "tool_choice": choice,
        "metadata": st.fixed_dictionaries({}, optional={"user_id": text}),
        "stop_sequences": st.lists(st.text(max_size=2), max_size=2),
        "temperature": st.floats(0, 1.2),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 5),
        "stream": st.booleans(),
        "n": st.sampled_from([1, 2]),
        "thinking": values,
    }
    required = {
        "model": st.just("m"),
        "max_tokens": st.integers(0, 9),
        "messages": st.lists(message, max_size=3),
    }
    return st.fixed_dictionaries(required, optional=optional)


@given(body=bodies() | st.dictionaries(st.sampled_from([*MessagesBody.model_fields, "n"]), kit.json_values()))
@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_body_is_a_valid_chat_body_or_a_400(body: dict[str, Any]) -> None:
    try:
        chat = to_chat(body)
    except AnthropicError as exc:
        assert exc.status == 400 and exc.param and exc.body()["error"]["message"]  # type: ignore[index]
    else:
        kit.valid_chat_body(chat, extras=("top_k",))
    try:
        assert count_tokens(body) >= 0
    except AnthropicError as exc:
        assert exc.status == 400
