"""Values that cross the expert boundary, and the narrow client protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI chat request without `model` (the pool fills in each expert's served model)."""

    messages: tuple[Mapping[str, Any], ...]
    #: OpenAI sampling parameters passed through unchanged (temperature, max_tokens, top_p, stop, seed, ...)
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


@dataclass(frozen=True, slots=True)
class ChatChunk:
    expert: str
    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None  # set on the last chunk when known
    cost_usd: float | None = None  # set on the last chunk, with usage


class ExpertClient(Protocol):
    async def chat(self, request: ChatRequest) -> ChatResult: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...
