"""The REST API's wire format (pydantic, at the edge only) and the pure helpers around it:
request bodies, routing options, the text to route, and OpenAI-format responses and SSE chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from experts.types import ChatRequest
from router.defaults import AGGREGATION_MODES
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


def json_numbers(*fields: str) -> Any:
    """A request model's validator: `fields` take JSON numbers only (the three APIs' bodies use it)."""
    return field_validator(*fields, mode="before")(lambda v: _json_number(v))


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
    aggregate: str | None = None  # one of router.defaults.AGGREGATION_MODES
    load_bias: StrictBool | None = None
    #: quality / cost_aware with a quality head: maximise quality − λ·cost (USD); or its inverse, the
    #: willingness to pay per unit of quality
    lambda_: float | None = Field(default=None, alias="lambda", ge=0.0)
    wtp_usd: float | None = Field(default=None, gt=0.0)

    _numbers = json_numbers(
        "k", "p", "max_experts", "threshold", "tolerance", "budget_usd", "lambda_", "wtp_usd"
    )
    #: response cache: true = may be answered from / stored in the cache even if not deterministic or
    #: with tools; false = never; absent = the default rule (deterministic, no tools)
    cache: StrictBool | None = None

    @field_validator("aggregate")
    @classmethod
    def _aggregation_mode(cls, v: str | None) -> str | None:
        if v is not None and v not in AGGREGATION_MODES:
            raise ValueError(f"Input should be one of {', '.join(AGGREGATION_MODES)}")
        return v


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

    _numbers = json_numbers("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "n")

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


def choice_zero(chunk: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str, list[Any]]]:
    """A Chat Completions stream chunk's choice 0 as (choice, its text delta, its tool-call deltas): what the
    Responses and Messages streams translate (they drop the other choices)."""
    for choice in chunk.get("choices") or []:
        if choice.get("index", 0) == 0:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            yield choice, str(text) if text else "", list(delta.get("tool_calls") or [])


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
    threshold: float | None,
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
