"""How the pipeline answers, for every front door: a cached answer replayed, and a live stream turned into
`chat.completion.chunk` dicts (first chunk pulled before the response starts, so a failure before any
token gets a real HTTP status; a failure mid-stream becomes a `StreamFailure` item). Each API encodes those
dicts with its own `Encoder` (the chat encoder: OpenAI SSE chunks, an error event and [DONE])."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from deploy.api.errors import coe_error_body, error_body
from deploy.api.responses import SSE_DONE, StreamState, completion_chunks, completion_response, new_id, sse
from deploy.pipeline.metrics import Metrics
from deploy.pipeline.observe import RequestObs
from deploy.serve.seams import GatewayClient
from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from router.errors import CoeError
from router.types import RouteDecision

log = logging.getLogger("coe.ingress")


@dataclasses.dataclass(frozen=True, slots=True)
class StreamFailure:
    """A stream that failed after its first chunk: the status the error would have had, OpenAI's body."""

    status: int
    body: Mapping[str, Any]

    @property
    def message(self) -> str:
        return str((self.body.get("error") or {}).get("message") or "error")


Item = dict[str, Any] | StreamFailure


@dataclasses.dataclass(slots=True)
class Turn:
    """What the pipeline answered, for a front door to encode: the decision and its headers, and either
    the chat.completion body (with the `coe` trace) or the stream's items."""

    decision: RouteDecision
    headers: dict[str, str]
    model: str  # what the client asked for
    affinity: dict[str, Any] | None = None  # `coe.affinity`, when a continuation key was known
    response: dict[str, Any] | None = None
    items: AsyncIterator[Item] | None = None
    native: Any = None  # a front door's own answer (`Ingress.turn(divert=...)`)
    #: (expert, reply) -> remember who answered under the request's continuation keys; None: affinity off
    remember: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None


class Encoder(Protocol):
    """One API's stream encoding of the pipeline's chat chunks."""

    def start(self) -> list[bytes]: ...

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...

    def fail(self, failure: StreamFailure) -> list[bytes]: ...


class ChatEncoder:
    """Chat Completions: every chunk as a `data:` event, a failure as an OpenAI error event, then [DONE]."""

    def start(self) -> list[bytes]:
        return []

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        return [sse(chunk)]

    def finish(self) -> list[bytes]:
        return [SSE_DONE]

    def fail(self, failure: StreamFailure) -> list[bytes]:
        return [sse(failure.body), SSE_DONE]


async def encode(items: AsyncIterator[Item], encoder: Encoder) -> AsyncIterator[bytes]:
    """The pipeline's items through an encoder: start, each chunk, then finish or the failure."""
    for e in encoder.start():
        yield e
    async for item in items:
        if isinstance(item, StreamFailure):
            for e in encoder.fail(item):
                yield e
            return
        for e in encoder.chunk(item):
            yield e
    for e in encoder.finish():
        yield e


def cached_body(hit: ChatResult, decision: RouteDecision, obs: RequestObs | None = None) -> dict[str, Any]:
    """A cache hit as a chat.completion body: the stored answer, cost 0, `coe.cache = "hit"`."""
    result = dataclasses.replace(hit, cost_usd=0.0, latency_ms=0.0, attempts=())
    body = completion_response(result, decision)
    body["id"] = new_id()
    body["created"] = int(time.time())
    body["coe"]["cache"] = "hit"
    if obs is not None:
        obs.answered(body["id"], result)
    return body


async def cached_chunks(body: Mapping[str, Any], include_usage: bool) -> AsyncIterator[Item]:
    """A cached chat.completion body replayed as the chunks of a stream (usage chunk when asked for)."""
    chunks = completion_chunks(body)
    if chunks:
        chunks[0]["coe"] = body["coe"]
    for c in chunks:
        yield c
    if include_usage:
        usage: dict[str, Any] = {k: body[k] for k in ("id", "created", "model") if k in body}
        yield {
            **usage,
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": body.get("usage"),
            "coe": {"cost_usd": 0.0, "cache": "hit"},
        }


async def stream_chunks(
    gateway: GatewayClient,
    metrics: Metrics,
    cost_of: Callable[[str, Usage], float | None],
    decision: RouteDecision,
    chat_request: ChatRequest,
    include_usage: bool,
    *,
    on_done: Callable[[ChatResult], None] | None = None,
    cached: str | None = None,
    obs: RequestObs | None = None,
) -> AsyncIterator[Item]:
    """Pull the first chunk before answering, so failures before any token get a real HTTP status;
    a failure mid-stream ends the items with a `StreamFailure`. `on_done` gets the complete plain-text
    answer (the response cache)."""
    state = StreamState(decision, include_usage=include_usage, cost_of=cost_of, cache=cached)
    chunks = gateway.stream(decision, chat_request).__aiter__()
    t0 = time.perf_counter()
    try:
        first: ChatChunk | None = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except CoeError as exc:
        metrics.expert_error(getattr(exc, "expert", None))
        raise

    async def items() -> AsyncIterator[Item]:
        try:
            if first is not None:
                for d in state.chunks(first):
                    yield d
            async for chunk in chunks:
                for d in state.chunks(chunk):
                    yield d
            for d in state.finish_chunks():
                yield d
            model = state.model or "unknown"
            done = state.result()
            if on_done is not None and done is not None:
                on_done(done)
            metrics.stage("expert", time.perf_counter() - t0)
            metrics.expert_calls.labels(model).inc()
            metrics.tokens(model, state.usage, state.total_cost() or 0.0)
            if obs is not None:
                obs.streamed(state.id, state.model, state.usage, state.total_cost())
        except CoeError as exc:
            metrics.expert_error(getattr(exc, "expert", None))
            if obs is not None:
                obs.failed(exc, state.id)
            yield StreamFailure(exc.status, coe_error_body(exc))
        except Exception as exc:  # never a traceback on the wire
            log.exception("stream failed: %s", type(exc).__name__)
            if obs is not None:
                obs.failed(exc, state.id)
            yield StreamFailure(500, error_body("internal server error", "internal_error"))
        finally:
            if obs is not None and not obs.done:  # the client went away mid-stream
                obs.failed(asyncio.CancelledError(), state.id)

    return items()
