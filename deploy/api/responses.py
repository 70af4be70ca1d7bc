"""The response side of the OpenAI protocol: the expert's own body relayed with CoE's `coe` trace, the
x-coe-route header, chat.completion.chunk events and the stream state that relays chunks as they come
(deploy/api/protocol.py is the request side)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from experts.types import ChatChunk, ChatResult, Usage
from router.types import RouteDecision

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
    if decision.intent:  # what the router read, and which reading decided (router.types.READINGS)
        compact["intent"], compact["reading"] = decision.intent, decision.reading
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

    def _relay(self, raw: Mapping[str, Any], first: bool) -> dict[str, Any]:
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
        return d

    def _trace(self) -> dict[str, Any]:
        trace = route_trace(self.decision)
        if self.cache is not None:
            trace["cache"] = self.cache
        return trace

    def events(self, chunk: ChatChunk) -> list[bytes]:
        """The chunk as server-sent events (`chunks`, encoded)."""
        return [sse(d) for d in self.chunks(chunk)]

    def chunks(self, chunk: ChatChunk) -> list[dict[str, Any]]:
        """The `chat.completion.chunk` dicts one ChatChunk becomes (none, one or two)."""
        out: list[dict[str, Any]] = []
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

    def _composed(self, delta: str, first: bool) -> list[dict[str, Any]]:
        out = []
        model = self.model or "coe"
        if first:
            role = {"role": "assistant", "content": ""}
            out.append(chunk_dict(self.id, self.created, model, delta=role, extra={"coe": self._trace()}))
        if delta:
            out.append(chunk_dict(self.id, self.created, model, delta={"content": delta}))
        return out

    def finish(self) -> list[bytes]:
        """The closing events: `finish_chunks()` encoded, then [DONE]."""
        return [*(sse(d) for d in self.finish_chunks()), SSE_DONE]

    def finish_chunks(self) -> list[dict[str, Any]]:
        """The closing chunks: the finish (for answers CoE composed) and the usage chunk when asked for."""
        model = self.model or (self.decision.expert_names[0] if self.decision.experts else "coe")
        out = []
        if not self.relayed:
            out.append(
                chunk_dict(self.id, self.created, model, delta={}, finish_reason=self.finish_reason or "stop")
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
            out.append(d)
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
