"""Values that cross the expert boundary: requests, results, stream chunks and usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI chat request without `model` (the pool fills in each expert's served model).

    `messages` and `params` are what the client sent, unchanged: every role, field and content part, and
    every parameter (tools, response_format, n, logprobs, vendor extras such as vLLM's top_k or
    guided_json), except `model`, `stream`, `stream_options` and CoE's own `routing`."""

    messages: tuple[Mapping[str, Any], ...]
    #: every other body parameter, passed through unchanged
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )


@dataclass(frozen=True, slots=True)
class ChatResult:
    expert: str  # registry name of the expert that produced `content` ("coe:<mode>" for aggregations)
    content: str
    finish_reason: str | None = "stop"
    usage: Usage = Usage()
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    #: experts whose answers went into this result (aggregation), and failed attempts before it
    contributors: tuple[str, ...] = ()
    attempts: tuple[Mapping[str, Any], ...] = ()
    #: the expert's response body as it sent it (all choices, tool_calls, logprobs, usage details, ...);
    #: None for answers CoE composed itself (aggregation)
    raw: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatChunk:
    expert: str
    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None  # set on the last chunk when known
    cost_usd: float | None = None  # set on the last chunk, with usage
    #: the expert's `chat.completion.chunk` as it sent it (relayed as is); on the last chunk, the expert's
    #: usage-only chunk when it sent one; None for chunks CoE composed itself (aggregation)
    raw: Mapping[str, Any] | None = None
