"""The Responses API adapter (deploy/api/openai_responses.py): requests to Chat Completions bodies (checked
against the openai SDK's CompletionCreateParams and CoE's own chat parser), answers and streams back to
Responses objects and events (checked against openai.types.responses, with no undeclared field), bad bodies to
400s in OpenAI's error shape; and the openai SDK and the OpenAI Agents SDK driving the adapter over HTTP
(httpx2.MockTransport, the transport of the SDKs' httpx2: their real request building and SSE parsing) with
a chat expert double."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import (
    Response,
    ResponseCreateParams,
    ResponseInputItemParam,
    ResponseStreamEvent,
)
from pydantic import BaseModel, TypeAdapter

from deploy.api.openai_responses import (
    ResponsesBody,
    ResponsesStream,
    from_chat,
    input_items,
    sse,
    to_chat,
)
from router.errors import BadRequest
from tests.deploy import adapter_kit as kit

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CREATE: TypeAdapter[Any] = TypeAdapter(ResponseCreateParams)
ITEMS: TypeAdapter[Any] = TypeAdapter(list[ResponseInputItemParam])
TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "look up",
    "parameters": {"type": "object"},
    "strict": False,
}
#: Response has no `store` field in the SDK's model, though the API returns it
ECHOED_ONLY = {".store"}


def chat_of(body: dict[str, Any], history: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    kit.drain(CREATE.validate_python({"model": "auto", **body}))  # a body the SDK could send
    chat = to_chat(body, history)
    kit.valid_chat_body(chat)
    return chat


def response(obj: dict[str, Any]) -> Response:
    model = Response.model_validate(obj)
    assert set(kit.unknown_fields(model)) <= ECHOED_ONLY
    return model


def events_valid(events: list[dict[str, Any]]) -> list[str]:
    for e in events:
        parsed = EVENTS.validate_python(e)
        assert set(kit.unknown_fields(parsed)) <= {f".response{f}" for f in ECHOED_ONLY}, e["type"]
    seqs = [e["sequence_number"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    return [e["type"] for e in events]


# ----- request --------------------------------------------------------------------------------------------


def test_string_input_and_instructions() -> None:
    chat = chat_of({"model": "auto", "input": "Hello there", "instructions": "Be brief."})
    assert chat == {
        "model": "auto",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
    }


def test_message_items_with_text_image_and_file_parts() -> None:
    chat = chat_of(
        {
            "input": [
                {"role": "developer", "content": "Answer in French."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                        {
                            "type": "input_file",
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "a.pdf",
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}],
                },
            ]
        }
    )
    assert chat["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                },
            ],
        },
        {"role": "user", "content": "one\ntwo"},
    ]
    from deploy.api.protocol import ChatCompletionBody

    assert ChatCompletionBody.model_validate(chat).needs() == {"vision"}


def test_function_call_loop_items_become_one_assistant_turn_and_tool_messages() -> None:
    """Parallel calls are one assistant message with both tool_calls; the call ids survive (affinity keys)."""
    chat = chat_of(
        {
            "input": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "function_call",
                    "call_id": "call_a",
                    "name": "weather",
                    "arguments": '{"city":"Paris"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_b",
                    "name": "weather",
                    "arguments": '{"city":"Rome"}',
                },
                {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_b",
                    "output": [{"type": "input_text", "text": "21C"}],
                },
            ],
            "tools": [{**TOOL, "name": "weather"}],
        }
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                kit.tool_call("call_a", "weather", '{"city":"Paris"}'),
                kit.tool_call("call_b", "weather", '{"city":"Rome"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "21C"},
    ]


def test_previous_output_items_replay_as_assistant_turns() -> None:
    """A Response's own output items (what clients append to the next input) are valid input."""
    prev = from_chat(
        kit.answer(chat_of({"input": "hi"})), response_id="resp_1", body={"input": "hi"}, created_at=1
    )
    chat = chat_of(
        {"input": [{"role": "user", "content": "hi"}, *prev["output"], {"role": "user", "content": "again"}]}
    )
    assert chat["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "echo: hi"},
        {"role": "user", "content": "again"},
    ]


def test_history_comes_after_instructions_and_before_the_input() -> None:
    history = (
        *input_items({"input": "first question"}),
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "first answer"}],
        },
    )
    chat = chat_of({"input": "second question", "instructions": "Sys."}, history)
    assert [m["content"] for m in chat["messages"]] == [
        "Sys.",
        "first question",
        "first answer",
        "second question",
    ]


def test_tools_tool_choice_and_parallel_tool_calls() -> None:
    chat = chat_of(
        {
            "input": "x",
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "lookup"},
            "parallel_tool_calls": False,
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object"},
                "description": "look up",
                "strict": False,
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert chat["parallel_tool_calls"] is False
    for choice in ("auto", "none", "required"):
        assert chat_of({"input": "x", "tools": [TOOL], "tool_choice": choice})["tool_choice"] == choice
    strict = chat_of({"input": "x", "tools": [{**TOOL, "strict": True}]})["tools"][0]["function"]
    assert strict["strict"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"format": {"type": "text"}}, {}),
        ({"format": {"type": "json_object"}}, {"response_format": {"type": "json_object"}}),
        (
            {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True}},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True},
                }
            },
        ),
        ({"verbosity": "low"}, {"verbosity": "low"}),
    ],
)
def test_text_format(text: dict[str, Any], expected: dict[str, Any]) -> None:
    chat = chat_of({"input": "x", "text": text})
    assert {k: chat[k] for k in ("response_format", "verbosity") if k in chat} == expected


def test_sampling_limits_reasoning_metadata_and_stream() -> None:
    body = {
        "input": "x",
        "max_output_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning": {"effort": "low", "summary": "auto"},
        "metadata": {"ticket": "7"},
        "user": "u1",
        "prompt_cache_key": "session-9",
        "stream": True,
        "store": True,
        "include": [],
        "truncation": "auto",
        "previous_response_id": "resp_0",
    }
    chat = chat_of(body)
    assert {k: v for k, v in chat.items() if k not in ("model", "messages")} == {
        "max_completion_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning_effort": "low",
        "metadata": {"ticket": "7"},
        "user": "u1",
        "prompt_cache_key": "session-9",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_vendor_extras_pass_through_as_on_the_chat_endpoint() -> None:
    chat = to_chat({"input": "x", "top_k": 20, "seed": 3, "routing": {"policy": "top_k"}})
    assert (chat["top_k"], chat["seed"], chat["routing"]) == (20, 3, {"policy": "top_k"})


def test_n_of_one_is_accepted() -> None:
    assert "n" not in to_chat({"input": "x", "n": 1})


BAD = [
    ({"model": "m"}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input[0].output"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
        "input[0].content[0]",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
        "input[0].content[0]",
    ),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": 7}]}, "input[0].content"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "strict": "yes"}]}, "tools[0].strict"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "description": 5}]}, "tools[0].description"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters"),
    (
        {
            "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": "u", "detail": "max"}]}
            ]
        },
        "input[0].content[0].detail",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "d", "filename": 5}]}]},
        "input[0].content[0].filename",
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}]},
        "input[0].arguments",
    ),
    ({"input": "x", "text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"input": "x", "reasoning": {"effort": 3}}, "reasoning.effort"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"input": "x", "n": 2}, "n"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "temperature": 3}, "temperature"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "model": " "}, "model"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_bodies_are_400s_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        to_chat(body)
    err = info.value
    assert (err.status, err.param) == (400, param)
    assert err.body() == {
        "error": {"message": err.message, "type": "invalid_request_error", "param": param, "code": err.code}
    }
    assert err.message


def test_input_items_normalises_for_storage() -> None:
    raw = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"type": "function_call_output", "call_id": "c", "output": "o"},
    ]
    items = input_items({"input": raw})
    assert items == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
        {"type": "function_call_output", "call_id": "c", "output": "o"},
    ]
    assert input_items({"input": "hi"}) == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    ]
    kit.drain(ITEMS.validate_python(items[:1] + items[2:]))
    assert input_items({"model": "m"}) == []


def test_request_model_documents_the_fields() -> None:
    schema = ResponsesBody.model_json_schema()
    assert {"input", "instructions", "tools", "text", "max_output_tokens", "previous_response_id"} <= set(
        schema["properties"]
    )


# ----- response ---------------------------------------------------------------------------------------------


def test_text_answer_and_echoed_settings() -> None:
    body = {
        "model": "auto",
        "input": "hi",
        "instructions": "Sys.",
        "tools": [TOOL],
        "tool_choice": "auto",
        "text": {"format": {"type": "json_object"}},
        "temperature": 0.3,
        "top_p": 0.5,
        "metadata": {"a": "b"},
        "previous_response_id": "resp_0",
        "max_output_tokens": 64,
        "parallel_tool_calls": False,
    }
    obj = from_chat(kit.chat_reply({"content": "Hello!"}), response_id="resp_abc", body=body, created_at=7)
    r = response(obj)
    assert (r.id, r.status, r.output_text, r.model, r.created_at) == (
        "resp_abc",
        "completed",
        "Hello!",
        "qwen",
        7,
    )
    assert (r.instructions, r.temperature, r.top_p, r.metadata) == ("Sys.", 0.3, 0.5, {"a": "b"})
    assert (r.previous_response_id, r.max_output_tokens, r.parallel_tool_calls) == ("resp_0", 64, False)
    assert r.text is not None and r.text.format is not None and r.text.format.type == "json_object"
    assert r.tools[0].type == "function" and r.tool_choice == "auto"
    assert r.usage is not None
    assert r.usage.model_dump() == {
        "input_tokens": 11,
        "input_tokens_details": {
            "cached_tokens": 4,
            "cache_write_tokens": 0,
            "cache_write_tokens_details": None,
        },
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 16,
    }


def test_parallel_tool_calls_become_function_call_items() -> None:
    calls = [
        kit.tool_call("call_1", "weather", '{"city":"Paris"}'),
        kit.tool_call(None, "weather", '{"city":"Rome"}'),
    ]
    r = response(
        from_chat(
            kit.chat_reply({"content": None, "tool_calls": calls}, "tool_calls"),
            response_id="resp_x",
            body={"input": "q"},
            created_at=1,
        )
    )
    assert [(o.type, o.call_id, o.name, o.arguments) for o in r.output] == [  # type: ignore[union-attr]
        ("function_call", "call_1", "weather", '{"city":"Paris"}'),
        ("function_call", "call_x_1", "weather", '{"city":"Rome"}'),
    ]
    assert r.status == "completed"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_cut_answers_are_incomplete(finish: str, reason: str) -> None:
    r = response(
        from_chat(kit.chat_reply({"content": "Hel"}, finish), response_id="resp_1", body={}, created_at=1)
    )
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == reason
    assert r.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_only_choice_zero_is_read_and_missing_usage_is_none() -> None:
    chat = kit.chat_reply({"content": "first"})
    chat["choices"].append(
        {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "stop"}
    )
    chat["choices"].reverse()
    del chat["usage"]
    r = response(from_chat(chat, response_id="resp_1", body={}, created_at=1))
    assert (r.output_text, r.usage) == ("first", None)


# ----- stream ---------------------------------------------------------------------------------------------


def run_stream(
    chat_chunks: list[dict[str, Any]], body: dict[str, Any] | None = None
) -> tuple[ResponsesStream, list[dict[str, Any]]]:
    s = ResponsesStream("resp_s", body or {"input": "q"}, 5)
    events = s.start() + [e for c in chat_chunks for e in s.feed(c)] + s.finish()
    return s, events


def test_text_stream_event_sequence_matches_the_api() -> None:
    chat = to_chat({"input": "hello world", "stream": True})
    s, events = run_stream(kit.chunks(chat))
    types = events_valid(events)
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert (
        "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        == "echo: hello world"
    )
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    # the streamed response is the one the non-streamed path builds
    whole = from_chat(kit.answer(chat), response_id="resp_s", body={"input": "q"}, created_at=5)
    assert events[-1]["response"] == s.response
    assert Response.model_validate(s.response).output == Response.model_validate(whole).output
    assert s.response["usage"] == whole["usage"]


def test_tool_call_arguments_streamed_across_chunks() -> None:
    chat = to_chat({"input": "q", "tools": [TOOL, {**TOOL, "name": "other"}], "stream": True})
    s, events = run_stream(kit.chunks(chat))
    types = events_valid(events)
    assert types.count("response.output_item.added") == 2
    assert types.count("response.function_call_arguments.delta") == 4
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [json.loads(e["arguments"]) for e in done] == [{"q": "q"}, {"q": "q"}]
    added = [e["item"]["name"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["lookup", "other"]
    whole = from_chat(kit.answer(chat), response_id="resp_s", body={"input": "q"}, created_at=5)
    assert s.response["output"] == whole["output"] and s.response["status"] == "completed"


def test_several_tool_calls_in_one_chunk_with_interleaved_argument_deltas() -> None:
    chat_chunks = [
        kit.delta_chunk({"content": "Let me check."}),
        kit.delta_chunk(
            {
                "tool_calls": [
                    kit.tool_call("call_a", "f", '{"x"', 0),
                    kit.tool_call("call_b", "g", '{"y"', 1),
                ]
            }
        ),
        kit.delta_chunk(
            {
                "tool_calls": [
                    {"index": 1, "function": {"arguments": ":2}"}},
                    {"index": 0, "function": {"arguments": ":1}"}},
                ]
            },
            "tool_calls",
        ),  # fmt: skip
    ]
    s, events = run_stream(chat_chunks)
    types = events_valid(events)
    assert types.index("response.output_item.done") < types.index("response.function_call_arguments.delta")
    out = Response.model_validate(s.response).output
    assert [o.type for o in out] == ["message", "function_call", "function_call"]
    assert [(o.call_id, o.arguments) for o in out[1:]] == [("call_a", '{"x":1}'), ("call_b", '{"y":2}')]  # type: ignore[union-attr]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [0, 1, 2]


def test_text_after_tool_calls_is_a_new_message_item_and_items_close_in_output_order() -> None:
    s, events = run_stream(
        [
            kit.delta_chunk(
                {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}
            ),
            kit.delta_chunk({"content": "and then"}),
            kit.delta_chunk({}, "tool_calls"),
        ]
    )
    events_valid(events)
    done = [
        (e["output_index"], e["item"]["type"]) for e in events if e["type"] == "response.output_item.done"
    ]
    assert done == [(0, "function_call"), (1, "message")]
    assert [o["type"] for o in s.response["output"]] == ["function_call", "message"]
    assert s.response["model"] == "qwen"  # the expert's, as from_chat reports it


def test_length_cut_stream_ends_incomplete() -> None:
    _, events = run_stream(
        kit.chunks(to_chat({"input": "a b c d e f", "max_output_tokens": 2, "stream": True}))
    )
    types = events_valid(events)
    assert types[-1] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_choices_other_than_zero_are_ignored_in_a_stream() -> None:
    other = kit.delta_chunk({"content": "nope"})
    other["choices"][0]["index"] = 1
    s, events = run_stream([kit.delta_chunk({"content": "yes"}), other, kit.delta_chunk({}, "stop")])
    events_valid(events)
    assert Response.model_validate(s.response).output_text == "yes"


def test_fail_after_start_sends_error_and_response_failed() -> None:
    s = ResponsesStream("resp_f", {"input": "q"}, 1)
    events = s.start() + s.feed(kit.delta_chunk({"content": "par"})) + s.fail(502, "expert gone")
    types = events_valid(events)
    assert types[-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "expert gone" and events[-2]["code"] == "server_error"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "expert gone"}
    assert s.fail(429, "slow down")[0]["code"] == "rate_limit_exceeded"


def test_sse_frames() -> None:
    frame = sse({"type": "response.output_text.delta", "sequence_number": 3, "delta": "é"})
    assert frame.startswith(b"event: response.output_text.delta\ndata: {") and frame.endswith(b"}\n\n")
    assert json.loads(frame.decode().split("data: ", 1)[1])["delta"] == "é"


# ----- the official SDKs over HTTP ----------------------------------------------------------------------


class Service:
    """/v1/responses made of the adapter and the expert double, with a dict for stored responses."""

    def __init__(self, expert: Any = kit.Double) -> None:
        self.expert = expert
        self.stored: dict[str, list[dict[str, Any]]] = {}
        self.chats: list[dict[str, Any]] = []
        self.replies: list[Any] = []  # the expert's answer, or its chunks

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/responses"
        body = json.loads(request.content)
        rid = f"resp_{len(self.stored) + 1}"
        try:
            prev = body.get("previous_response_id")
            history = self.stored[prev] if prev else []
            chat = to_chat(body, history)
        except BadRequest as exc:
            return httpx2.Response(exc.status, json=exc.body())
        kit.valid_chat_body(chat)
        self.chats.append(chat)
        if chat.get("stream"):
            s = ResponsesStream(rid, body, 100)
            self.replies.append(self.expert.chunks(chat))
            events = s.start() + [e for c in self.replies[-1] for e in s.feed(c)] + s.finish()
            out = s.response
            reply = httpx2.Response(
                200, content=b"".join(sse(e) for e in events), headers={"content-type": "text/event-stream"}
            )
        else:
            self.replies.append(self.expert.answer(chat))
            out = from_chat(self.replies[-1], response_id=rid, body=body, created_at=100)
            reply = httpx2.Response(200, json=out)
        self.stored[rid] = [*history, *input_items(body), *out["output"]]
        return reply


def sdk_client(service: Service) -> Any:
    """The openai SDK, its requests answered by `service` in process."""
    import openai

    return openai.OpenAI(
        api_key="k", base_url="http://coe.test/v1", http_client=kit.mock_http(service), max_retries=0
    )


service, client = kit.sdk_fixtures(Service, sdk_client)


def final_response(client: Any, stream: bool, **create: Any) -> Any:
    """`client.responses.create(**create)`, or with `stream` the same through the SDK's stream helper."""
    if stream:
        with client.responses.stream(**create) as s:
            return s.get_final_response()
    return client.responses.create(**create)


def test_sdk_plain_and_previous_response_id(client: Any, service: Service) -> None:
    first = client.responses.create(model="auto", input="capital of France?", instructions="Be brief.")
    assert first.output_text == "echo: capital of France?"
    second = client.responses.create(model="auto", input="and Italy?", previous_response_id=first.id)
    assert second.output_text == "echo: and Italy?"
    assert [m["content"] for m in service.chats[-1]["messages"]] == [
        "capital of France?",
        "echo: capital of France?",
        "and Italy?",
    ]


def test_sdk_stream_events_and_final_response(client: Any) -> None:
    events = list(client.responses.create(model="auto", input="stream me", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    with client.responses.stream(model="auto", input="stream me") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "echo: stream me"
    assert final.usage is not None and final.usage.input_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_function_calling_loop(client: Any, stream: bool) -> None:
    tools = [
        {
            "type": "function",
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    conversation: list[Any] = [{"role": "user", "content": "population of Lyon"}]
    first = final_response(client, stream, model="auto", input=conversation, tools=tools)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("lookup", {"q": "population of Lyon"})]
    conversation += first.output  # the SDK's own output objects, as the docs' loop does
    conversation.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "522,000"})
    second = client.responses.create(model="auto", input=conversation, tools=tools)
    assert second.output_text == "echo: 522,000"


def test_sdk_json_schema_parse(client: Any) -> None:
    class Answer(BaseModel):
        answer: str

    parsed = client.responses.parse(model="auto", input="give JSON", text_format=Answer)
    assert parsed.output_parsed == Answer(answer="give JSON")


def test_sdk_bad_body_is_an_openai_400(client: Any) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="auto", input="x", tools=[{"type": "web_search"}])
    assert info.value.status_code == 400
    assert info.value.body["param"] == "tools[0].type"  # type: ignore[index]


async def test_agents_sdk_default_responses_model_runs_a_tool_loop(service: Service) -> None:
    import openai
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    looked_up: list[str] = []

    @function_tool
    def lookup(q: str) -> str:
        """Look a fact up."""
        looked_up.append(q)
        return "Lyon has 522,000 people"

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(service)) as http:
        client = openai.AsyncOpenAI(
            api_key="k", base_url="http://coe.test/v1", http_client=http, max_retries=0
        )
        agent = Agent(
            name="a",
            instructions="Use tools.",
            tools=[lookup],
            model=OpenAIResponsesModel(model="auto", openai_client=client),
        )
        result = await Runner.run(agent, "population of Lyon?")
        streamed = Runner.run_streamed(agent, "population of Lyon?")
        async for _ in streamed.stream_events():
            pass
    assert looked_up == ["population of Lyon?", "population of Lyon?"]
    assert result.final_output == streamed.final_output == "echo: Lyon has 522,000 people"
    assert service.chats[0]["messages"][0] == {"role": "system", "content": "Use tools."}


# ----- real Chat Completions servers behind the adapter --------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_like_expert_function_calling_loop(fake_vllm: kit.HttpExpert, stream: bool) -> None:
    """vLLM's tool-call answers (its stream splits the arguments in two deltas) through the adapter."""
    client = sdk_client(Service(fake_vllm))
    tools = [
        {
            "type": "function",
            "name": "lookup",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    conversation: list[Any] = [{"role": "user", "content": "population of Lyon"}]
    first = final_response(client, stream, model="auto", input=conversation, tools=tools)
    (call,) = [o for o in first.output if o.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("lookup", {"city": "x"})
    conversation += [
        *first.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": "522,000"},
    ]
    second = client.responses.create(model="auto", input=conversation, tools=tools, tool_choice="none")
    assert second.output_text == "tool said: 522,000"


def test_vllm_like_expert_json_schema_and_image(fake_vllm: kit.HttpExpert) -> None:
    class City(BaseModel):
        name: str
        population: int

    client = sdk_client(Service(fake_vllm))
    assert client.responses.parse(model="auto", input="Lyon?", text_format=City).output_parsed == City(
        name="x", population=7
    )
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}
    r = client.responses.create(
        model="auto", input=[{"role": "user", "content": [image, {"type": "input_text", "text": "what?"}]}]
    )
    assert r.output_text == "echo: [image] what?"  # the image reached the expert as an image part


@pytest.mark.slow
def test_real_model_plain_and_streamed(smollm: kit.HttpExpert) -> None:
    """SmolLM2's own answers and token counts come back unchanged, plain and streamed."""
    service = Service(smollm)
    client = sdk_client(service)
    r = client.responses.create(model="auto", input="Name a colour.", max_output_tokens=12, temperature=0)
    reply = service.replies[-1]
    assert r.output_text == reply["choices"][0]["message"]["content"] and r.output_text
    assert r.status == ("incomplete" if reply["choices"][0]["finish_reason"] == "length" else "completed")
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (
        reply["usage"]["prompt_tokens"],
        reply["usage"]["completion_tokens"],
    )
    # raw events: the SDK's stream helper waits for response.completed, and a cut answer ends with
    # response.incomplete, as OpenAI's own does (the Agents SDK takes both)
    stream = client.responses.create(
        model="auto", input="Name a colour.", max_output_tokens=12, temperature=0, stream=True
    )
    events = list(stream)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    sent_chunks = [c for c in service.replies[-1] if c["choices"]]
    sent = "".join(c["choices"][0]["delta"].get("content") or "" for c in sent_chunks)
    finish = [c["choices"][0]["finish_reason"] for c in sent_chunks if c["choices"][0]["finish_reason"]]
    assert events[-1].type == ("response.incomplete" if finish == ["length"] else "response.completed")
    final = events[-1].response
    assert text == final.output_text == sent and text
    assert final.usage is not None and final.usage.output_tokens > 0


# ----- any body: a Chat Completions body or a 400 ---------------------------------------------------------


def bodies() -> Any:
    """Responses bodies whose every field may be a wrong value: items and parts keep a known type more
    often than not, so the draws reach the translation of each kind."""
    values = kit.json_values()
    text = st.text(max_size=3) | values
    part = st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file", "refusal", "x"])},
        optional={
            k: text for k in ("text", "image_url", "file_data", "filename", "detail", "refusal", "file_id")
        },
    )
    content = st.lists(part, max_size=3) | text
    item = st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["message", "function_call", "function_call_output", "reasoning", "item_reference"]
            )
        },
        optional={
            "role": st.sampled_from(["user", "assistant", "system", "developer"]) | values,
            "content": content,
            "output": content,
            "call_id": text,
            "name": text,
            "arguments": text,
        },
    )
    tool = st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "web_search"])},
        optional={"name": text, "parameters": values, "strict": values, "description": text},
    )
    fmt = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema", "xml"])},
        optional={"name": text, "schema": values, "strict": values},
    )
    # top-level fields mostly well-typed, so the draws reach the items; wrong values live inside them
    optional = {
        "input": st.lists(item, max_size=4) | st.text(max_size=3),
        "instructions": st.text(max_size=3),
        "tools": st.lists(tool, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required", "x"])
        | st.fixed_dictionaries(
            {"type": st.sampled_from(["function", "allowed_tools"])}, optional={"name": text}
        ),
        "text": st.fixed_dictionaries(
            {}, optional={"format": fmt, "verbosity": st.sampled_from(["low", "high", "x"])}
        ),
        "reasoning": st.fixed_dictionaries(
            {}, optional={"effort": st.sampled_from(["low", "high"]) | values}
        ),
        "max_output_tokens": st.integers(0, 50),
        "temperature": st.floats(0, 2.5),
        "top_p": st.floats(0, 1),
        "stream": st.booleans(),
        "n": st.sampled_from([1, 2]),
        "metadata": st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2),
        "parallel_tool_calls": st.booleans(),
        "top_k": st.integers(1, 5),
    }
    return st.fixed_dictionaries({}, optional=optional)


@given(
    body=bodies(),
    history=st.lists(st.just({"type": "message", "role": "user", "content": "before"}), max_size=1),
)
@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_body_is_a_valid_chat_body_or_a_400(body: dict[str, Any], history: list[dict[str, Any]]) -> None:
    try:
        chat = to_chat(body, history)
        items = input_items(body)
    except BadRequest as exc:
        assert exc.status == 400 and exc.message and exc.param
        return
    kit.valid_chat_body(chat, extras=("top_k",))
    raw = body.get("input")
    assert len(items) == (1 if isinstance(raw, str) else len(raw or []))
