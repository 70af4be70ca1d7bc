"""The Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) as a protocol adapter over
Chat Completions: the request model, the translation of a request to a Chat Completions body (`to_chat`) and
of the answer back to a Message (`from_chat`), the stream encoder (`MessagesStream`: Chat Completions chunks
in, Anthropic events out), Anthropic's error JSON (`error_body`) and the token estimate (`count_tokens`).
Pure: no I/O, no routes.

| Messages                                        | Chat Completions                                  |
|-------------------------------------------------|---------------------------------------------------|
| `system` (string or text blocks)                | a leading `system` message                        |
| `text` / `image` (base64, url) / `document` (base64 PDF) blocks | `text` / `image_url` / `file` parts |
| assistant `tool_use` blocks                     | assistant `tool_calls` (input as JSON arguments)  |
| user `tool_result` blocks                       | `tool` messages, first; their images in the user message |
| `thinking` / `redacted_thinking` blocks         | dropped (Chat Completions takes no reasoning input) |
| `tools` (`input_schema`)                        | function tools (`parameters`)                     |
| `tool_choice` auto / any / tool / none          | auto / required / the named function / none       |
| `tool_choice.disable_parallel_tool_use`         | `parallel_tool_calls: false`                      |
| `max_tokens`, `stop_sequences`                  | `max_tokens`, `stop`                              |
| `temperature`, `top_p`, `top_k`                 | the same (top_k as vLLM's extra)                  |
| `metadata.user_id`                              | `user`                                            |
| `stream: true`                                  | `stream` + `stream_options.include_usage`         |

Answers: choice 0 only (a Message has one output; the request never asks for more). `finish_reason` ->
`stop_reason`: stop -> end_turn (stop_sequence when the expert names the matched string in the choice's
`stop_reason`, as vLLM does), length -> max_tokens, tool_calls -> tool_use, content_filter -> refusal.

Errors: a bad body raises `AnthropicError`, a `router.errors.BadRequest` (so it stays in the one exception
tree and maps to 400 everywhere) whose `body()` is Anthropic's shape, `{"type": "error", "error": {"type",
"message"}}`; `error_body(status, message)` renders any other error (a CoeError's status and message) the same
way. Server tools (web search, bash, ...), `file` image/document sources and `container` uploads are refused;
`thinking`, `cache_control`, `service_tier` and other fields not in the table are accepted and not acted on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from deploy.api.protocol import ChatCompletionBody, choice_zero, json_numbers
from router.errors import BadRequest

#: HTTP status -> Anthropic's error type (https://docs.anthropic.com/en/api/errors)
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}  # fmt: skip


class AnthropicError(BadRequest):
    """A request the Messages API refuses, rendered in Anthropic's error shape by `body()`."""

    def __init__(self, status: int, error_type: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status = status
        self.error_type = error_type

    def body(self) -> dict[str, object]:
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error JSON for an HTTP status: `{"type": "error", "error": {"type", "message"}}`."""
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _invalid(message: str, param: str | None = None) -> AnthropicError:
    return AnthropicError(400, "invalid_request_error", message, param=param)


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class CountTokensBody(BaseModel):
    """POST /v1/messages/count_tokens: a Messages body without max_tokens (extra fields allowed)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(pattern=r"\S")
    messages: list[MessageParam] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream: StrictBool = False

    _numbers = json_numbers("max_tokens", "temperature", "top_p", "top_k")


class MessagesBody(CountTokensBody):
    """POST /v1/messages, validated where CoE reads it (extra fields allowed, and not forwarded)."""

    max_tokens: int = Field(ge=1)


def _validate(body: Mapping[str, Any], model: type[CountTokensBody]) -> CountTokensBody:
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"])
        what = "Field required" if err["type"] == "missing" else err["msg"]
        raise _invalid(f"{param}: {what}", param) from None
    if body.get("n") not in (None, 1):
        raise _invalid("n: a Message has one output", "n")
    return parsed


# ----- request: Messages -> Chat Completions -------------------------------------------------------------


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Chat Completions body for this Messages request."""
    return _translate(_validate(body, MessagesBody))


def count_tokens(body: Mapping[str, Any]) -> int:
    """`/v1/messages/count_tokens`: the prompt estimate the chat endpoint uses for its context check
    (text characters / 4, tool schemas included; deploy.api.protocol.ChatCompletionBody.context_tokens)."""
    chat = _translate(_validate(body, CountTokensBody))
    chat.pop("max_tokens", None)
    return ChatCompletionBody.model_validate(chat).context_tokens()


def _translate(parsed: CountTokensBody) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = _system(parsed.system)
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(parsed.messages):
        where = f"messages.{i}"
        if message.role == "assistant":
            messages.append(_assistant(message.content, where))
        else:
            messages.extend(_user(message.content, where))
    chat: dict[str, Any] = {"model": parsed.model, "messages": messages}
    if parsed.max_tokens is not None:
        chat["max_tokens"] = parsed.max_tokens
    if parsed.tools:
        chat["tools"] = [_tool(i, t) for i, t in enumerate(parsed.tools)]
    if parsed.tool_choice is not None:
        chat.update(_tool_choice(parsed.tool_choice))
    if parsed.stop_sequences:
        chat["stop"] = list(parsed.stop_sequences)
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(parsed, name)
        if value is not None:
            chat[name] = value
    user_id = (parsed.metadata or {}).get("user_id")
    if isinstance(user_id, str) and user_id:
        chat["user"] = user_id
    if parsed.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _system(system: str | list[dict[str, Any]] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for j, block in enumerate(system):
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _invalid(f"system.{j}: system blocks must be text blocks", f"system.{j}")
        texts.append(block["text"])
    return "\n".join(texts)


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _assistant(content: str | list[dict[str, Any]], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            if not (
                isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
            ) or not isinstance(block.get("input", {}), dict):
                raise _invalid(
                    f"{where}.content.{j}: tool_use needs an id, a name and an input object",
                    f"{where}.content.{j}",
                )
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _invalid(
                f"{where}.content.{j}: block type '{kind}' is not supported here", f"{where}.content.{j}.type"
            )
    # content may be null only beside tool calls (Chat Completions' rule)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as `tool` messages first (Chat Completions wants them right after the
    assistant's calls), then one user message with the rest and any images the tool results held."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not content:
        raise _invalid(f"{where}.content: a user turn needs at least one block", f"{where}.content")
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        if block.get("type") == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise _invalid(f"{at}.tool_use_id: Field required", f"{at}.tool_use_id")
            texts, images = _tool_result(block.get("content"), at)
            text = "\n".join(texts)
            if block.get("is_error"):
                text = f"Error: {text}"  # Chat Completions has no error flag: say it in the text
            tools.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            parts.extend(images)
        else:
            parts.append(_part(block, at))
    out = list(tools)
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result(content: Any, at: str) -> tuple[list[str], list[dict[str, Any]]]:
    if content is None or isinstance(content, str):
        return [content or ""], []
    if not isinstance(content, list):
        raise _invalid(f"{at}.content: a string or a list of blocks", f"{at}.content")
    texts, images = [], []
    for k, block in enumerate(content):
        part = _part(block, f"{at}.content.{k}")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    return texts, images


def _part(block: Any, at: str) -> dict[str, Any]:
    """A user content block -> a Chat Completions content part."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _invalid(f"{at}.text: Field required", f"{at}.text")
        return {"type": "text", "text": block["text"]}
    if kind in ("image", "document"):
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            url = f"data:{source.get('media_type', '')};base64,{source['data']}"
        elif source.get("type") == "url" and isinstance(source.get("url"), str) and kind == "image":
            url = source["url"]
        else:
            allowed = "base64 or url" if kind == "image" else "base64"
            raise _invalid(f"{at}.source: only {allowed} sources are supported", f"{at}.source")
        if kind == "image":
            return {"type": "image_url", "image_url": {"url": url}}
        file = {
            "file_data": url,
            **({"filename": block["title"]} if isinstance(block.get("title"), str) else {}),
        }
        return {"type": "file", "file": file}
    raise _invalid(
        f"{at}: block type '{kind}' is not supported (text, image, document, tool_result)", f"{at}.type"
    )


def _tool(i: int, tool: Mapping[str, Any]) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise _invalid(
            f"tools.{i}: server tool '{tool.get('type')}' is not supported; give input_schema tools",
            f"tools.{i}.type",
        )
    if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
        raise _invalid(f"tools.{i}: a tool needs a name and an input_schema", f"tools.{i}")
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Mapping[str, Any]) -> dict[str, Any]:
    kind = choice.get("type")
    out: dict[str, Any]
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "none":
        out = {"tool_choice": "none"}
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        raise _invalid("tool_choice.type must be auto, any, tool (with a name) or none", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


# ----- response: Chat Completions -> Message -------------------------------------------------------------


def _arguments(arguments: str | None) -> dict[str, Any]:
    """A tool call's JSON arguments as tool_use input (an object; {} when the expert sent no valid object)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def stop_reason(
    finish_reason: str | None, matched: Any = None, *, tool_calls: bool = False
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a Chat Completions finish_reason; `matched` is vLLM's
    choice.stop_reason (the stop string that ended the text, when one did)."""
    if tool_calls or finish_reason in ("tool_calls", "function_call"):
        return "tool_use", None
    if finish_reason in _STOP_REASONS:
        return _STOP_REASONS[finish_reason], None
    if isinstance(matched, str):
        return "stop_sequence", matched
    return "end_turn", None


def usage(chat_usage: Mapping[str, Any] | None) -> dict[str, Any]:
    chat_usage = chat_usage or {}
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": int(chat_usage.get("prompt_tokens") or 0),
        "output_tokens": int(chat_usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": int(cached),
    }


def from_chat(chat: Mapping[str, Any], *, message_id: str, model: str) -> dict[str, Any]:
    """A Message for a Chat Completions answer (choice 0)."""
    choices = chat.get("choices") or []
    choice = next((c for c in choices if c.get("index", 0) == 0), choices[0] if choices else {})
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content") or message.get("refusal")
    if text:
        content.append({"type": "text", "text": str(text)})
    calls = message.get("tool_calls") or []
    for j, call in enumerate(calls):
        fn = call.get("function") or {}
        call_id = call.get("id") or f"toolu_{message_id.removeprefix('msg_')}_{j}"
        content.append(
            {
                "type": "tool_use",
                "id": call_id,
                "name": fn.get("name", ""),
                "input": _arguments(fn.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("stop_reason"), tool_calls=bool(calls)
    )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(chat.get("usage")),
    }


# ----- streaming -------------------------------------------------------------------------------------


def sse(name: str, data: Mapping[str, Any]) -> bytes:
    """One Anthropic server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


Event = tuple[str, dict[str, Any]]


class MessagesStream:
    """Chat Completions chunks in, Anthropic stream events out: message_start and a ping, then one content
    block at a time (content_block_start, its text_delta / input_json_delta deltas, content_block_stop), then
    message_delta (stop_reason, usage) and message_stop. A block closes when the next one starts, so tool
    calls are expected in index order, as OpenAI and vLLM stream them (several in one chunk are fine)."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self._block = -1  # index of the last block started
        self._open: str | None = None  # "text" or "tool:<chat index>" while a block is open
        self._calls: dict[int, str] = {}  # chat tool-call index -> tool_use id
        self._finish: str | None = None
        self._matched: Any = None
        self._usage: Mapping[str, Any] | None = None

    def start(self) -> list[Event]:
        message: dict[str, Any] = {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage(None),
        }  # fmt: skip
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def _start_block(self, key: str, block: dict[str, Any]) -> list[Event]:
        events = self._stop_block()
        self._block += 1
        self._open = key
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": block},
            )
        )
        return events

    def _stop_block(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta})

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        """One Chat Completions chunk: choice 0's text and tool-call deltas, and the usage if any."""
        events: list[Event] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice, text, calls in choice_zero(chunk):
            if text:
                if self._open != "text":
                    events += self._start_block("text", {"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in calls:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")
        return events

    def _call_delta(self, call: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        index = int(call.get("index", len(self._calls)))
        fn = call.get("function") or {}
        key = f"tool:{index}"
        if index not in self._calls:
            call_id = call.get("id") or f"toolu_{self.message_id.removeprefix('msg_')}_{len(self._calls)}"
            self._calls[index] = call_id
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id,
                "name": fn.get("name") or "",
                "input": {},
            }
            events += self._start_block(key, block)
        if fn.get("arguments") and self._open == key:
            events.append(self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]}))
        return events

    def finish(self) -> list[Event]:
        reason, sequence = stop_reason(self._finish, self._matched, tool_calls=bool(self._calls))
        u = usage(self._usage)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": {k: u[k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens")},
        }
        return [*self._stop_block(), ("message_delta", delta), ("message_stop", {"type": "message_stop"})]

    def fail(self, status: int, message: str) -> list[Event]:
        """The `error` event for an error after the stream began."""
        return [("error", error_body(status, message))]
