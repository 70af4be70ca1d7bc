"""The REST API's wire format (pydantic, at the edge only) and the pure helpers around it:
request bodies, routing options, the text to route, and OpenAI-format responses and SSE chunks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from router.errors import BadRequest, NotFound
from router.types import RouteDecision, RoutingOptions

#: public model aliases -> policy names (router.policies.POLICIES keys)
POLICY_ALIASES: dict[str, str] = {
    "coe-category": "category",
    "coe-top-k": "top_k",
    "coe-top-p": "top_p",
    "coe-cost": "cost_aware",
    "coe-quality": "quality",
}
AUTO_MODEL = "auto"

#: body fields CoE consumes itself; every other field goes to the expert unchanged
COE_FIELDS = ("model", "messages", "stream", "routing")

#: every role OpenAI's Chat Completions API defines
ROLES = ("system", "developer", "user", "assistant", "tool", "function")

#: request content-part types -> the capability an expert needs to take them
PART_CAPABILITIES = {"image_url": "vision", "input_image": "vision", "input_audio": "audio"}

#: prompt characters per token for the context-length estimate (the expert's tokenizer is not at hand)
CHARS_PER_TOKEN = 4


def _json_number(value: Any) -> Any:
    """A JSON number only: pydantic's lax mode would take `"5"` and `true` for numbers (5.0 stays an
    integer, as in JSON Schema)."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError("must be a number")
    return value


class RoutingBody(BaseModel):
    """The `routing` object (SDK: `extra_body={"routing": {...}}`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    policy: str | None = None
    k: int | None = Field(default=None, ge=1, le=16)
    p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_experts: int | None = Field(default=None, ge=1, le=16)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    tolerance: float | None = Field(default=None, ge=0.0, le=1.0)
    budget_usd: float | None = Field(default=None, ge=0.0)
    aggregate: Literal["synthesize", "vote", "best"] | None = None
    load_bias: StrictBool | None = None
    #: quality / cost_aware with a quality head: maximise quality − λ·cost (USD); or its inverse, the
    #: willingness to pay per unit of quality
    lambda_: float | None = Field(default=None, alias="lambda", ge=0.0)
    wtp_usd: float | None = Field(default=None, gt=0.0)

    _numbers = field_validator(
        "k", "p", "max_experts", "threshold", "tolerance", "budget_usd", "lambda_", "wtp_usd", mode="before"
    )(lambda v: _json_number(v))
    #: response cache: true = may be answered from / stored in the cache even if not deterministic or
    #: with tools; false = never; absent = the default rule (deterministic, no tools)
    cache: StrictBool | None = None


class ContentPart(BaseModel):
    """One content part; only `type` (and `text` for text parts) is checked, the rest passes through."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    """A message as the router reads it. Validation only: the expert receives the client's own dict."""

    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id, refusal, ... pass on

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The text parts only (never image or audio data)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    def part_types(self) -> set[str]:
        return {p.type for p in self.content} if isinstance(self.content, list) else set()

    @property
    def calls_tools(self) -> bool:
        extra = self.model_extra or {}
        return bool(extra.get("tool_calls") or extra.get("function_call"))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str


class ChatCompletionBody(BaseModel):
    """POST /v1/chat/completions, validated only where CoE reads it. Every other field, known to OpenAI or
    a vendor extra (vLLM's top_k, guided_json, chat_template_kwargs, ...), is kept and passed through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(default=AUTO_MODEL, pattern=r"\S")  # not blank (the validator strips it)
    messages: list[Message] = Field(min_length=1)
    # strict types where CoE reads a value: `"seed": false` or `"max_tokens": "5"` are 400s, as documented
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    routing: RoutingBody | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None

    _numbers = field_validator(
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "n", mode="before"
    )(lambda v: _json_number(v))

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be empty")
        return v

    # ----- what the request needs -------------------------------------------------------------
    def needs(self) -> frozenset[str]:
        """Capabilities an expert must have: tools (tools/functions offered unless tool_choice is
        "none", or tool turns in the history), json (json_object / json_schema output), vision (image
        parts), audio (audio parts)."""
        out: set[str] = set()
        offered = bool(self.tools) and self.tool_choice != "none"
        offered = offered or (bool(self.functions) and self.function_call != "none")
        history = any(m.role in ("tool", "function") or m.calls_tools for m in self.messages)
        if offered or history:
            out.add("tools")
        if self.response_format is not None and self.response_format.type in ("json_object", "json_schema"):
            out.add("json")
        for m in self.messages:
            for t in m.part_types():
                cap = PART_CAPABILITIES.get(t)
                if cap is not None:
                    out.add(cap)
        return frozenset(out)

    def single_expert(self, needs: frozenset[str] | None = None) -> bool:
        """Tools, JSON output and n > 1 are answered by one expert (aggregation merges plain text only);
        `needs` is `self.needs()` when the caller has it already."""
        return bool((self.needs() if needs is None else needs) & {"tools", "json"}) or (self.n or 1) > 1

    def prompt_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)

    def context_tokens(self) -> int:
        """Estimated prompt tokens (text characters / 4, tool schemas included) plus the completion
        budget (`max_completion_tokens`, else `max_tokens`, else nothing)."""
        chars = self.prompt_chars()
        for schema in (self.tools, self.functions):
            if schema:
                chars += len(json.dumps(schema, separators=(",", ":")))
        budget = self.max_completion_tokens or self.max_tokens or 0
        return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + budget

    def deterministic(self) -> bool:
        return self.temperature == 0 or self.seed is not None


def parse_chat(data: Mapping[str, Any]) -> tuple[ChatCompletionBody, ChatRequest]:
    """Validate a chat body and build the request forwarded to experts from the client's own JSON:
    messages exactly as sent, and every parameter but model / messages / stream / routing."""
    body = ChatCompletionBody.model_validate(data)
    params = {k: v for k, v in data.items() if k not in COE_FIELDS}
    return body, ChatRequest(messages=tuple(data["messages"]), params=params)


class RouteBody(BaseModel):
    """POST /v1/route: either `messages` (as in chat) or a plain `text`."""

    model_config = ConfigDict(extra="forbid")

    model: str = AUTO_MODEL
    messages: list[Message] | None = None
    text: str | None = None
    routing: RoutingBody | None = None

    def routing_text(self, max_chars: int) -> str:
        if self.text is not None:
            if not self.text.strip():
                raise BadRequest("text must not be empty", param="text", code="invalid_value")
            text = self.text
        elif self.messages:
            text = routing_text(self.messages)  # may be "" (no text parts at all): routed like chat
        else:
            raise BadRequest("give 'messages' or 'text'", param="messages", code="missing_required_parameter")
        if len(text) > max_chars:
            raise BadRequest(
                f"prompt is {len(text)} characters; the limit is {max_chars}",
                param="text",
                code="context_length_exceeded",
            )
        return text


def routing_text(messages: Sequence[Message]) -> str:
    """The text the router embeds: the human's text parts only (never image data, tool results, tool
    calls or tool schemas), combined by `router.text.conversation_text` (the last user turn first; with
    no user text, the assistant's turns, else the system/developer instructions)."""
    from router.text import conversation_text

    return conversation_text([(m.role, m.text()) for m in messages])


def resolve_model(
    model: str, routing: RoutingBody | None, known_policies: Sequence[str], experts: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """`model` -> (policy, expert): exactly one is set. `auto` takes the routing/default policy."""
    body_policy = routing.policy if routing else None
    if body_policy is not None and body_policy not in known_policies:
        raise BadRequest(
            f"unknown routing policy '{body_policy}'; known: {', '.join(sorted(known_policies))}",
            param="routing.policy",
            code="invalid_value",
        )
    if model == AUTO_MODEL:
        return body_policy, None
    if model in POLICY_ALIASES:
        policy = POLICY_ALIASES[model]
        if body_policy is not None and body_policy != policy:
            raise BadRequest(
                f"model '{model}' selects policy '{policy}' but routing.policy is '{body_policy}'",
                param="routing.policy",
                code="invalid_value",
            )
        return policy, None
    expert = experts.get(model)
    if expert is not None and getattr(expert, "enabled", True):
        if routing is not None and routing.model_dump(exclude_none=True, exclude={"cache"}):
            raise BadRequest(
                f"model '{model}' names an expert, which bypasses routing; drop 'routing'",
                param="routing",
                code="invalid_value",
            )
        return None, model
    names = [
        AUTO_MODEL,
        *POLICY_ALIASES,
        *sorted(n for n, e in experts.items() if getattr(e, "enabled", True)),
    ]
    # 404, as OpenAI answers an unknown model (and as /openapi.json documents)
    raise NotFound(
        f"unknown model '{model}'; available: {', '.join(names)}", param="model", code="model_not_found"
    )


def routing_options(
    body: RoutingBody | None,
    policy: str | None,
    *,
    default_policy: str,
    threshold: float,
    needs: frozenset[str] = frozenset(),
    context_tokens: int = 0,
    single: bool = False,
    max_tokens: int | None = None,
) -> RoutingOptions:
    base = RoutingOptions(
        policy=policy or default_policy,
        threshold=threshold,
        needs=needs,
        context_tokens=context_tokens,
        single=single,
        max_tokens=max_tokens,
    )
    if body is None:
        return base
    values = body.model_dump(exclude_none=True, exclude={"policy", "cache"})
    opts = RoutingOptions(**{**_options_dict(base), **values})
    if opts.k > opts.max_experts and "max_experts" in values and "k" in values:
        raise BadRequest(
            f"routing.k ({opts.k}) exceeds routing.max_experts ({opts.max_experts})",
            param="routing.k",
            code="invalid_value",
        )
    return opts


def _options_dict(o: RoutingOptions) -> dict[str, Any]:
    return {f: getattr(o, f) for f in RoutingOptions.__dataclass_fields__}


def direct_decision(expert: str) -> RouteDecision:
    """The decision for `model: <expert name>`: no routing, that expert only."""
    from router.types import ExpertChoice

    return RouteDecision(
        categories=(), experts=(ExpertChoice(expert, 1.0, reason="requested by name"),), policy="direct"
    )


# ----- responses -----------------------------------------------------------------------------------


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def route_trace(decision: RouteDecision, result: ChatResult | None = None) -> dict[str, Any]:
    """The `coe` field: the routing decision plus what happened when the experts were called."""
    trace = decision.to_dict()
    if result is not None:
        trace["answered_by"] = result.expert
        trace["contributors"] = list(result.contributors)
        trace["attempts"] = [dict(a) for a in result.attempts]
        trace["timings_ms"] = {**trace["timings_ms"], "expert": round(result.latency_ms, 3)}
        trace["cost_usd"] = result.cost_usd
    return trace


def route_header(decision: RouteDecision) -> str:
    """Compact JSON for the `x-coe-route` header (ASCII only, no newlines)."""
    compact = {
        "policy": decision.policy,
        "experts": list(decision.expert_names),
        "categories": [[c, round(p, 4)] for c, p in decision.categories[:3]],
        "fallback": decision.fallback,
        "router_version": decision.router_version,
    }
    if decision.aggregate:
        compact["aggregate"] = decision.aggregate
    return json.dumps(compact, separators=(",", ":"), ensure_ascii=True)


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_response(
    result: ChatResult,
    decision: RouteDecision,
    *,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The expert's own response body (every choice, tool_calls, logprobs, usage details,
    system_fingerprint) with `model` = the expert that answered and the `coe` trace added; composed here
    only for answers CoE wrote itself (aggregation)."""
    if result.raw is not None:
        body = dict(result.raw)
        body["model"] = result.expert
        body.setdefault("id", completion_id or new_id())
        body.setdefault("object", "chat.completion")
        body.setdefault("created", created or int(time.time()))
        if not isinstance(body.get("usage"), dict):
            body["usage"] = usage_dict(result.usage)
        body["coe"] = route_trace(decision, result)
        return body
    return {
        "id": completion_id or new_id(),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": result.expert,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content},
                "finish_reason": result.finish_reason or "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_dict(result.usage),
        "coe": route_trace(decision, result),
    }


def chunk_dict(
    completion_id: str,
    created: int,
    model: str,
    *,
    delta: Mapping[str, Any],
    finish_reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}],
    }
    if extra:
        d.update(extra)
    return d


def sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


SSE_DONE = sse("[DONE]")


def completion_chunks(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A complete `chat.completion` body as the `chat.completion.chunk`s of a stream (a cache hit asked
    for with `stream: true`): per choice, one delta with the whole message, then its finish."""
    base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint") if k in body}
    base["object"] = "chat.completion.chunk"
    out: list[dict[str, Any]] = []
    for ch in body.get("choices") or []:
        msg = dict(ch.get("message") or {})
        delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(msg["tool_calls"])]
        if msg.get("refusal"):
            delta["refusal"] = msg["refusal"]
        i = ch.get("index", 0)
        out.append(
            {**base, "choices": [{"index": i, "delta": delta, "finish_reason": None, "logprobs": None}]}
        )
        out.append(
            {
                **base,
                "choices": [
                    {"index": i, "delta": {}, "finish_reason": ch.get("finish_reason"), "logprobs": None}
                ],
            }
        )
    return out


class StreamState:
    """Turns ChatChunks into OpenAI `chat.completion.chunk` events. Pure: unit-tested without HTTP.

    An expert's chunks (`chunk.raw`) are relayed as it sent them, every choice and delta (tool_calls,
    logprobs, refusal) included, with `model` = the expert that answers and the `coe` trace on the first;
    its usage chunk is relayed only when the client asked for usage (`stream_options.include_usage`),
    with `coe.cost_usd`. Chunks CoE composes itself (aggregation) are written here: role first, content,
    finish, usage."""

    def __init__(
        self, decision: RouteDecision, *, include_usage: bool, cost_of: Any = None, cache: str | None = None
    ) -> None:
        self.id = new_id()
        self.cache = cache  # "miss" when the response cache looked this request up
        self.created = int(time.time())
        self.decision = decision
        self.include_usage = include_usage
        self.cost_of = cost_of  # callable(expert, Usage) -> float | None
        self.model: str | None = None
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.text_len = 0
        self.cost_usd: float | None = None  # from the last chunk when the pool knows it
        self.relayed = False  # the expert's own chunks were relayed (they carry their own finish)
        self.usage_chunk: Mapping[str, Any] | None = None
        self.parts: list[str] = []  # choice 0's text, for the response cache
        self.text_only = True  # False once a chunk had tool calls or several choices (not cached)

    def _relay(self, raw: Mapping[str, Any], first: bool) -> bytes:
        for ch in raw.get("choices") or ():
            if (
                not isinstance(ch, dict)
                or ch.get("index", 0) != 0
                or (ch.get("delta") or {}).get("tool_calls")
            ):
                self.text_only = False
        d = dict(raw)
        d["model"] = self.model
        if not self.include_usage:
            d.pop("usage", None)
        if first:
            self.id = str(d.get("id") or self.id)
            d["coe"] = self._trace()
        return sse(d)

    def _trace(self) -> dict[str, Any]:
        trace = route_trace(self.decision)
        if self.cache is not None:
            trace["cache"] = self.cache
        return trace

    def events(self, chunk: ChatChunk) -> list[bytes]:
        out: list[bytes] = []
        first = self.model is None
        if first:
            self.model = chunk.expert
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.cost_usd is not None:
            self.cost_usd = chunk.cost_usd
        self.text_len += len(chunk.delta)
        if chunk.delta:
            self.parts.append(chunk.delta)
        if chunk.finish_reason is not None:
            # the pool's closing chunk: usage and cost (its raw is the expert's usage chunk, if any)
            self.finish_reason = chunk.finish_reason
            if chunk.raw is not None:
                self.usage_chunk = chunk.raw
            if not self.relayed and chunk.delta:
                out.extend(self._composed(chunk.delta, first))
            return out
        if chunk.raw is not None:
            self.relayed = True
            out.append(self._relay(chunk.raw, first))
            return out
        out.extend(self._composed(chunk.delta, first))
        return out

    def _composed(self, delta: str, first: bool) -> list[bytes]:
        out = []
        model = self.model or "coe"
        if first:
            role = {"role": "assistant", "content": ""}
            out.append(
                sse(chunk_dict(self.id, self.created, model, delta=role, extra={"coe": self._trace()}))
            )
        if delta:
            out.append(sse(chunk_dict(self.id, self.created, model, delta={"content": delta})))
        return out

    def finish(self) -> list[bytes]:
        model = self.model or (self.decision.expert_names[0] if self.decision.experts else "coe")
        out = []
        if not self.relayed:
            out.append(
                sse(
                    chunk_dict(
                        self.id, self.created, model, delta={}, finish_reason=self.finish_reason or "stop"
                    )
                )
            )
        if self.include_usage:
            if self.usage_chunk is not None:
                d = dict(self.usage_chunk)
                d["model"] = model
            else:
                d = chunk_dict(self.id, self.created, model, delta={})
                d["choices"] = []
                d["usage"] = usage_dict(self.usage)
            cost = self.total_cost()
            d["coe"] = {"cost_usd": round(cost, 8) if cost is not None else None}
            out.append(sse(d))
        out.append(SSE_DONE)
        return out

    def result(self) -> ChatResult | None:
        """The streamed answer as one result (for the response cache); None unless it was plain text."""
        if not self.text_only or self.model is None:
            return None
        return ChatResult(
            expert=self.model,
            content="".join(self.parts),
            finish_reason=self.finish_reason or "stop",
            usage=self.usage,
            cost_usd=self.total_cost() or 0.0,
        )

    def total_cost(self) -> float | None:
        if self.cost_usd is not None:
            return self.cost_usd
        if self.cost_of is not None and self.model is not None:
            return self.cost_of(self.model, self.usage)
        return None

    def error(self, body: Mapping[str, Any]) -> list[bytes]:
        return [sse(body), SSE_DONE]
