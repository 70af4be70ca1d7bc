"""The REST API's wire format (pydantic, at the edge only) and the pure helpers around it:
request bodies, routing options, the text to route, and OpenAI-format responses and SSE chunks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from router.errors import BadRequest
from router.types import RouteDecision, RoutingOptions

#: public model aliases -> policy names (router.policies.POLICIES keys)
POLICY_ALIASES: dict[str, str] = {
    "coe-category": "category",
    "coe-top-k": "top_k",
    "coe-top-p": "top_p",
    "coe-cost": "cost_aware",
}
AUTO_MODEL = "auto"

#: OpenAI parameters passed through to the expert unchanged
PASSTHROUGH_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)


class RoutingBody(BaseModel):
    """The `routing` object (SDK: `extra_body={"routing": {...}}`)."""

    model_config = ConfigDict(extra="forbid")

    policy: str | None = None
    k: int | None = Field(default=None, ge=1, le=16)
    p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_experts: int | None = Field(default=None, ge=1, le=16)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    tolerance: float | None = Field(default=None, ge=0.0, le=1.0)
    budget_usd: float | None = Field(default=None, ge=0.0)
    aggregate: Literal["synthesize", "vote", "best"] | None = None
    load_bias: bool | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ... are tolerated and passed on

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)

    def wire(self) -> dict[str, Any]:
        """The message as sent to an expert: plain string content, roles experts understand."""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """POST /v1/chat/completions. Unknown parameters are rejected by name (OpenAI does the same)."""

    model_config = ConfigDict(extra="forbid")

    model: str = AUTO_MODEL
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    routing: RoutingBody | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int | None = None
    user: str | None = None
    # accepted only in their "off" form
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be empty")
        return v

    def check_supported(self) -> None:
        """Reject parameters that are valid OpenAI but not supported here, naming them."""
        if self.n not in (None, 1):
            raise BadRequest("only n=1 is supported", param="n", code="unsupported_value")
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise BadRequest(
                    f"'{name}' is not supported by CoE Router", param=name, code="unsupported_parameter"
                )
        for name in ("tool_choice", "function_call"):
            if getattr(self, name) not in (None, "none", "auto"):
                raise BadRequest(
                    f"'{name}' is not supported by CoE Router", param=name, code="unsupported_parameter"
                )
        if self.logprobs or self.top_logprobs:
            raise BadRequest(
                "logprobs are not supported by CoE Router", param="logprobs", code="unsupported_parameter"
            )
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise BadRequest(
                "only response_format type 'text' is supported",
                param="response_format.type",
                code="unsupported_value",
            )
        if not any(m.role == "user" and m.text().strip() for m in self.messages):
            raise BadRequest(
                "messages must contain at least one non-empty user message",
                param="messages",
                code="invalid_value",
            )

    def prompt_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)

    def chat_request(self) -> ChatRequest:
        params = {k: getattr(self, k) for k in PASSTHROUGH_PARAMS if getattr(self, k) is not None}
        return ChatRequest(messages=tuple(m.wire() for m in self.messages), params=params)


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
            text = routing_text(self.messages)
            if not text.strip():
                raise BadRequest(
                    "messages must contain at least one non-empty user message",
                    param="messages",
                    code="invalid_value",
                )
        else:
            raise BadRequest("give 'messages' or 'text'", param="messages", code="missing_required_parameter")
        if len(text) > max_chars:
            raise BadRequest(
                f"prompt is {len(text)} characters; the limit is {max_chars}",
                param="text",
                code="context_length_exceeded",
            )
        return text


def routing_text(messages: Sequence[Message], earlier_share: float = 0.5, min_earlier: int = 200) -> str:
    """The text the router embeds: the last user turn in full, then earlier user turns (most recent
    first), truncated to a share of the last turn's length, so the last turn weighs most."""
    turns = [m.text().strip() for m in messages if m.role == "user"]
    turns = [t for t in turns if t]
    if not turns:
        return ""
    last, earlier = turns[-1], turns[:-1]
    if not earlier:
        return last
    budget = max(min_earlier, int(len(last) * earlier_share))
    context = "\n".join(reversed(earlier))[:budget]
    return f"{last}\n\n{context}"


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
        if routing is not None and routing.model_dump(exclude_none=True):
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
    raise BadRequest(
        f"unknown model '{model}'; available: {', '.join(names)}", param="model", code="model_not_found"
    )


def routing_options(
    body: RoutingBody | None, policy: str | None, *, default_policy: str, threshold: float
) -> RoutingOptions:
    base = RoutingOptions(policy=policy or default_policy, threshold=threshold)
    if body is None:
        return base
    values = body.model_dump(exclude_none=True, exclude={"policy"})
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


def usage_dict(usage: Usage, cost_usd: float | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if cost_usd is not None:
        d["cost_usd"] = round(cost_usd, 8)
    return d


def completion_response(
    result: ChatResult,
    decision: RouteDecision,
    *,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
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
        "usage": usage_dict(result.usage, result.cost_usd),
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


class StreamState:
    """Turns ChatChunks into OpenAI `chat.completion.chunk` events (role first, content deltas,
    finish, optional usage chunk). Pure: unit-tested without HTTP."""

    def __init__(self, decision: RouteDecision, *, include_usage: bool, cost_of: Any = None) -> None:
        self.id = new_id()
        self.created = int(time.time())
        self.decision = decision
        self.include_usage = include_usage
        self.cost_of = cost_of  # callable(expert, Usage) -> float | None
        self.model: str | None = None
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.text_len = 0
        self.cost_usd: float | None = None  # from the last chunk when the pool knows it

    def events(self, chunk: ChatChunk) -> list[bytes]:
        out: list[bytes] = []
        if self.model is None:
            self.model = chunk.expert
            out.append(
                sse(
                    chunk_dict(
                        self.id,
                        self.created,
                        self.model,
                        delta={"role": "assistant", "content": ""},
                        extra={"coe": route_trace(self.decision)},
                    )
                )
            )
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.cost_usd is not None:
            self.cost_usd = chunk.cost_usd
        if chunk.delta:
            self.text_len += len(chunk.delta)
            out.append(sse(chunk_dict(self.id, self.created, self.model, delta={"content": chunk.delta})))
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        return out

    def finish(self) -> list[bytes]:
        model = self.model or (self.decision.expert_names[0] if self.decision.experts else "coe")
        out = [
            sse(
                chunk_dict(self.id, self.created, model, delta={}, finish_reason=self.finish_reason or "stop")
            )
        ]
        if self.include_usage:
            cost = self.total_cost()
            d = chunk_dict(self.id, self.created, model, delta={})
            d["choices"] = []
            d["usage"] = usage_dict(self.usage, cost)
            out.append(sse(d))
        out.append(SSE_DONE)
        return out

    def total_cost(self) -> float | None:
        if self.cost_usd is not None:
            return self.cost_usd
        if self.cost_of is not None and self.model is not None:
            return self.cost_of(self.model, self.usage)
        return None

    def error(self, body: Mapping[str, Any]) -> list[bytes]:
        return [sse(body), SSE_DONE]
