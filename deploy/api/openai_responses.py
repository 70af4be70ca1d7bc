"""The OpenAI Responses API (`POST /v1/responses`) as a protocol adapter over Chat Completions: the request
model, the translation of a request to a Chat Completions body (`to_chat`) and of the answer back to a
Response object (`from_chat`), and the stream encoder (`ResponsesStream`: Chat Completions chunks in,
Responses events out). Pure: no I/O, no routes; the pipeline calls these around the expert.

docs/apis.md has the field-by-field table. In short: messages, function calls and their outputs, function
tools, text.format and the sampling settings are translated; `reasoning` input items are dropped; built-in
tools, `item_reference` items, `file_id` inputs, `background`, `conversation`, `prompt` and `n` > 1 are
refused with 400 (`router.errors.BadRequest`, OpenAI's error shape; a Response has one output, so only
choice 0 of an answer is read); `store` and `previous_response_id` are the pipeline's (it passes the stored
turns as `history`); `include`, `truncation` and the like are accepted and ignored; any other field passes
to the expert unchanged, as on the chat endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from deploy.api.protocol import AUTO_MODEL, choice_zero, json_numbers
from router.errors import BadRequest

#: Responses fields with no Chat Completions meaning, read by the pipeline or accepted and ignored
_NOT_FORWARDED = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
        "max_output_tokens", "temperature", "top_p", "reasoning", "metadata", "stream", "stream_options",
        "store", "previous_response_id", "include", "truncation", "top_logprobs", "background",
        "prompt_cache_retention", "prompt_cache_options", "context_management", "user",
        "prompt_cache_key", "n",
    }
)  # fmt: skip
#: fields whose feature CoE cannot provide: a request that sets them is refused, not half-answered
_REFUSED = ("conversation", "prompt")
_ROLES = ("user", "system", "developer", "assistant")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")  # OpenAI's reasoning efforts
_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponsesBody(BaseModel):
    """POST /v1/responses, validated where CoE reads it; every other field is kept (extra allowed)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(default=AUTO_MODEL, pattern=r"\S")
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    stream: StrictBool = False
    store: StrictBool | None = None
    previous_response_id: str | None = None
    background: StrictBool | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    include: list[str] | None = None
    truncation: str | None = None

    _numbers = json_numbers("max_output_tokens", "temperature", "top_p")


def _validate(body: Mapping[str, Any]) -> ResponsesBody:
    try:
        return ResponsesBody.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        kind = "missing required parameter" if err["type"] == "missing" else "invalid value for"
        raise BadRequest(f"{kind} '{param}': {err['msg']}", param=param, code="invalid_value") from None


# ----- request: Responses -> Chat Completions ------------------------------------------------------------


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as Responses items (what is stored, and what a continuation replays): a
    string becomes one user message; a message's string content becomes one text part."""
    return _input_items(_validate(body))


def _input_items(parsed: ResponsesBody) -> list[dict[str, Any]]:
    raw = parsed.input
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
    out = []
    for i, item in enumerate(raw):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise BadRequest(
                    f"input[{i}].role must be one of {', '.join(_ROLES)}", param=f"input[{i}].role"
                )
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if role == "assistant" else "input_text"
                content = [{"type": part, "text": content}]
            out.append({**item, "type": "message", "content": content})
        else:
            out.append(dict(item))
    return out


def to_chat(body: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A Chat Completions body for this Responses request; `history` (the stored turns of
    `previous_response_id`'s chain, input and output items, oldest first) comes before the input."""
    parsed = _validate(body)
    for field in _REFUSED:
        if body.get(field) is not None:
            raise BadRequest(f"'{field}' is not supported by CoE", param=field, code="unsupported_parameter")
    if parsed.background:
        raise BadRequest("background responses are not supported", param="background")
    if body.get("n") not in (None, 1):
        raise BadRequest("a Response has one output: 'n' must be 1", param="n", code="invalid_value")
    messages: list[dict[str, Any]] = []
    if parsed.instructions:
        messages.append({"role": "system", "content": parsed.instructions})
    messages.extend(_messages([*history, *_input_items(parsed)], len(history)))
    if not any(m["role"] != "system" for m in messages):
        raise BadRequest(
            "'input' must hold at least one item", param="input", code="missing_required_parameter"
        )
    chat: dict[str, Any] = {"model": parsed.model, "messages": messages}
    if parsed.tools:
        chat["tools"] = [_tool(i, t) for i, t in enumerate(parsed.tools)]
    if parsed.tool_choice is not None:
        chat["tool_choice"] = _tool_choice(parsed.tool_choice)
    if parsed.parallel_tool_calls is not None:
        chat["parallel_tool_calls"] = parsed.parallel_tool_calls
    chat.update(_text_config(parsed.text))
    if parsed.max_output_tokens is not None:
        chat["max_completion_tokens"] = parsed.max_output_tokens
    for name in ("temperature", "top_p", "metadata", "user", "prompt_cache_key"):
        value = getattr(parsed, name)
        if value is not None:
            chat[name] = value
    effort = (parsed.reasoning or {}).get("effort")
    if effort is not None:
        if effort not in _EFFORTS:
            raise BadRequest(
                f"reasoning.effort must be one of {', '.join(_EFFORTS)}", param="reasoning.effort"
            )
        chat["reasoning_effort"] = effort
    if parsed.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for key, value in body.items():  # vendor extras (top_k, seed, service_tier, ...) pass through
        if key not in _NOT_FORWARDED and key not in chat:
            chat[key] = value
    return chat


def _messages(items: Sequence[Mapping[str, Any]], n_history: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        # errors name the request's own index (history items come from the store, not the client)
        where = f"input[{i - n_history}]" if i >= n_history else f"history[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", where),
                "type": "function",
                "function": {
                    "name": _string(item, "name", where),
                    "arguments": _string(item, "arguments", where, empty=True) or "{}",
                },
            }
            last = out[-1] if out else None
            # parallel calls are one assistant message in Chat Completions
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = _parts(output, f"{where}.output", tool=True)
            elif not isinstance(output, str):
                raise BadRequest(f"{where}.output must be a string or parts", param=f"{where}.output")
            out.append({"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": output})
        elif kind == "reasoning":
            continue  # the expert's own earlier reasoning: Chat Completions has no input for it
        else:
            raise BadRequest(
                f"input item type '{kind}' is not supported (message, function_call, function_call_output)",
                param=f"{where}.type",
                code="unsupported_value",
            )
    return out


def _string(item: Mapping[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = item.get(key, "" if empty else None)
    if not isinstance(value, str) or not (value or empty):
        raise BadRequest(f"{where}.{key} must be a non-empty string", param=f"{where}.{key}")
    return value


def _message(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise BadRequest(f"{where}.role must be one of {', '.join(_ROLES)}", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    if role == "assistant":
        text = "".join(_assistant_text(p, f"{where}.content[{j}]") for j, p in enumerate(content))
        return {"role": "assistant", "content": text}
    return {"role": role, "content": _parts(content, f"{where}.content", tool=False)}


def _assistant_text(part: Any, where: str) -> str:
    if isinstance(part, dict) and part.get("type") in ("output_text", "input_text", "text"):
        return str(part.get("text") or "")
    if isinstance(part, dict) and part.get("type") == "refusal":
        return str(part.get("refusal") or "")
    raise BadRequest(f"{where}: an assistant message takes output_text and refusal parts", param=where)


def _parts(parts: Sequence[Any], where: str, *, tool: bool) -> str | list[dict[str, Any]]:
    """Responses content parts -> Chat Completions parts; text only collapses to a string (every chat
    server takes that, and tool messages take text only)."""
    out: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            out.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "input_image" and not tool:
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise BadRequest(f"{at}: only image_url images are supported (no file_id)", param=at)
            if part.get("detail") not in (None, "auto", "low", "high"):
                raise BadRequest(f"{at}.detail must be auto, low or high", param=f"{at}.detail")
            out.append(
                {
                    "type": "image_url",
                    "image_url": {k: v for k, v in (("url", url), ("detail", part.get("detail"))) if v},
                }
            )
        elif kind == "input_file" and not tool:
            file = _typed(part, at, file_data=str, filename=str)
            if "file_data" not in file:
                raise BadRequest(f"{at}: only inline files (file_data) are supported", param=at)
            out.append({"type": "file", "file": file})
        else:
            allowed = "input_text" if tool else "input_text, input_image, input_file"
            raise BadRequest(f"{at}: part type '{kind}' is not supported ({allowed})", param=f"{at}.type")
    if all(p["type"] == "text" for p in out):
        return "\n".join(p["text"] for p in out)
    return out


def _tool(i: int, tool: Mapping[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise BadRequest(
            f"tool type '{tool.get('type')}' is not supported; CoE's experts take function tools",
            param=f"tools[{i}].type",
            code="unsupported_value",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("a function tool needs a name", param=f"tools[{i}].name")
    function = _typed(tool, f"tools[{i}]", parameters=dict, description=str, strict=bool)
    function.setdefault("parameters", {"type": "object", "properties": {}})
    return {"type": "function", "function": {"name": name, **function}}


def _typed(obj: Mapping[str, Any], where: str, **types: type) -> dict[str, Any]:
    """The optional fields `types` names, each checked for its JSON type (null = absent)."""
    for key, kind in types.items():
        if obj.get(key) is not None and not isinstance(obj[key], kind):
            name = {dict: "an object", str: "a string", bool: "a boolean"}[kind]
            raise BadRequest(f"{where}.{key} must be {name}", param=f"{where}.{key}")
    return {key: obj[key] for key in types if obj.get(key) is not None}


def _tool_choice(choice: str | Mapping[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise BadRequest("tool_choice must be auto, none, required or a function", param="tool_choice")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequest(
        f"tool_choice type '{choice.get('type')}' is not supported (auto, none, required, function)",
        param="tool_choice",
        code="unsupported_value",
    )


def _text_config(text: Mapping[str, Any] | None) -> dict[str, Any]:
    if not text:
        return {}
    out: dict[str, Any] = {}
    if text.get("verbosity") is not None:
        if text["verbosity"] not in ("low", "medium", "high"):
            raise BadRequest("text.verbosity must be low, medium or high", param="text.verbosity")
        out["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return out
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = _typed(fmt, "text.format", name=str, schema=dict, description=str, strict=bool)
        if "name" not in schema or "schema" not in schema:
            raise BadRequest("text.format json_schema needs a name and a schema", param="text.format")
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind != "text":
        raise BadRequest(
            "text.format.type must be text, json_object or json_schema", param="text.format.type"
        )
    return out


# ----- response: Chat Completions -> Response ------------------------------------------------------------


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def usage(chat_usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat Completions usage -> Responses usage (None when the expert reported none)."""
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


#: request fields a Response echoes as they were sent
_ECHOED = ("instructions", "max_output_tokens", "previous_response_id", "reasoning", "temperature",
           "top_p", "user")  # fmt: skip


def _envelope(rid: str, body: Mapping[str, Any], created_at: int, model: str | None) -> dict[str, Any]:
    """A Response without its output: the request's settings echoed, as OpenAI does."""
    text = body.get("text") or {}
    return {
        "id": rid, "object": "response", "created_at": created_at, "status": "in_progress",
        "error": None, "incomplete_details": None, "output": [], "usage": None,
        "model": model or body.get("model") or AUTO_MODEL,
        **{k: body.get(k) for k in _ECHOED},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "store": body.get("store", True),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": list(body.get("tools") or []),
        "truncation": body.get("truncation") or "disabled",
        "metadata": dict(body.get("metadata") or {}),
    }  # fmt: skip


def _finish(response: dict[str, Any], finish_reason: str | None) -> None:
    reason = _FINISH_INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def from_chat(
    chat: Mapping[str, Any], *, response_id: str, body: Mapping[str, Any], created_at: int
) -> dict[str, Any]:
    """A full Response object for a Chat Completions answer (choice 0: a Response has one output)."""
    response = _envelope(response_id, body, created_at, chat.get("model"))
    choices = chat.get("choices") or []
    choice = next((c for c in choices if c.get("index", 0) == 0), choices[0] if choices else {})
    message = choice.get("message") or {}
    _finish(response, choice.get("finish_reason"))
    status = "incomplete" if response["status"] == "incomplete" else "completed"
    sfx = _suffix(response_id)
    text = message.get("content") or message.get("refusal")
    if text:
        response["output"].append(_message_item(f"msg_{sfx}", str(text), status))
    for j, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") or {}
        call_id = call.get("id") or f"call_{sfx}_{j}"
        item = _call_item(f"fc_{sfx}_{j}", call_id, fn.get("name", ""), fn.get("arguments") or "", status)
        response["output"].append(item)
    response["usage"] = usage(chat.get("usage"))
    return response


# ----- streaming -------------------------------------------------------------------------------------


def sse(event: Mapping[str, Any]) -> bytes:
    """One Responses server-sent event: `event: <type>` and its JSON."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


class ResponsesStream:
    """Chat Completions chunks in, Responses stream events out, in the API's order: response.created,
    response.in_progress, then per output item output_item.added (+ content_part.added for a message),
    its deltas, its .done events and output_item.done, and last response.completed (response.incomplete
    when the answer was cut by max_output_tokens or a content filter). A message item is closed when a
    tool call starts; function calls stay open to the end, then everything open closes in output order,
    so calls whose argument deltas interleave (several in one chunk) are still whole. Every event carries
    an increasing sequence_number."""

    def __init__(self, response_id: str, body: Mapping[str, Any], created_at: int) -> None:
        self.response_id = response_id
        self._sfx = _suffix(response_id)
        self.response = _envelope(response_id, body, created_at, None)
        self._seq = 0
        self._text: dict[str, Any] | None = None  # the open message item: {"index", "id", "text"}
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> {"index", "id", "call_id", ...}
        self._items: list[dict[str, Any] | None] = []  # output items, None while open
        self._finish_reason: str | None = None
        self._usage: Mapping[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.response))  # events hold copies, never the live dict

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One Chat Completions chunk: its choice 0's text and tool-call deltas, its usage if any."""
        events: list[dict[str, Any]] = []
        if chunk.get("model"):  # the expert's model, as from_chat reports it
            self.response["model"] = chunk["model"]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice, text, calls in choice_zero(chunk):
            if text:
                events += self._text_delta(text)
            for call in calls:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        events = []
        if self._text is None:
            index = len(self._items)
            self._items.append(None)
            item_id = f"msg_{self._sfx}" if index == 0 else f"msg_{self._sfx}_{index}"
            self._text = {"index": index, "id": item_id, "text": ""}
            item = _message_item(item_id, "", "in_progress")
            part = item.pop("content")[0]
            events.append(
                self._event("response.output_item.added", output_index=index, item={**item, "content": []})
            )
            where = {"output_index": index, "item_id": item_id, "content_index": 0}
            events.append(self._event("response.content_part.added", **where, part=part))
        self._text["text"] += text
        where = {"output_index": self._text["index"], "item_id": self._text["id"], "content_index": 0}
        events.append(self._event("response.output_text.delta", **where, delta=text, logprobs=[]))
        return events

    def _close_text(self, status: str) -> list[dict[str, Any]]:
        if self._text is None:
            return []
        t, self._text = self._text, None
        item = _message_item(t["id"], t["text"], status)
        self._items[t["index"]] = item
        where = {"output_index": t["index"], "item_id": t["id"], "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=t["text"], logprobs=[]),
            self._event("response.content_part.done", **where, part=item["content"][0]),
            self._event("response.output_item.done", output_index=t["index"], item=item),
        ]

    def _call_delta(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        events = []
        key = int(call.get("index", len(self._calls)))
        fn = call.get("function") or {}
        state = self._calls.get(key)
        if state is None:
            events += self._close_text("completed")
            index = len(self._items)
            self._items.append(None)
            state = {
                "index": index,
                "id": f"fc_{self._sfx}_{len(self._calls)}",
                "call_id": call.get("id") or f"call_{self._sfx}_{len(self._calls)}",
                "name": fn.get("name") or "",
                "arguments": "",
            }
            self._calls[key] = state
            item = _call_item(state["id"], state["call_id"], state["name"], "", "in_progress")
            events.append(self._event("response.output_item.added", output_index=index, item=item))
        elif fn.get("name"):
            state["name"] += fn["name"]
        if fn.get("arguments"):
            state["arguments"] += fn["arguments"]
            where = {"output_index": state["index"], "item_id": state["id"]}
            events.append(
                self._event("response.function_call_arguments.delta", **where, delta=fn["arguments"])
            )
        return events

    def _close_call(self, state: dict[str, Any], status: str) -> list[dict[str, Any]]:
        item = _call_item(state["id"], state["call_id"], state["name"], state["arguments"], status)
        self._items[state["index"]] = item
        where = {"output_index": state["index"], "item_id": state["id"]}
        return [
            self._event("response.function_call_arguments.done", **where, arguments=item["arguments"]),
            self._event("response.output_item.done", output_index=state["index"], item=item),
        ]

    def finish(self) -> list[dict[str, Any]]:
        """The closing events and the final response.completed / response.incomplete."""
        _finish(self.response, self._finish_reason)
        status = "incomplete" if self.response["status"] == "incomplete" else "completed"
        events: list[dict[str, Any]] = []
        open_items = [*self._calls.values(), *([self._text] if self._text else [])]
        for state in sorted(open_items, key=lambda st: st["index"]):  # .done events in output order
            events += self._close_text(status) if state is self._text else self._close_call(state, status)
        self._calls = {}
        self.response["output"] = [item for item in self._items if item is not None]
        self.response["usage"] = usage(self._usage)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return [*events, self._event(kind, response=self._snapshot())]

    def fail(self, status: int, message: str) -> list[dict[str, Any]]:
        """An `error` event and response.failed, for an error after the stream began."""
        code = {429: "rate_limit_exceeded"}.get(status, "invalid_prompt" if status < 500 else "server_error")
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        self.response["output"] = [item for item in self._items if item is not None]
        return [
            self._event("error", code=code, message=message, param=None),
            self._event("response.failed", response=self._snapshot()),
        ]
