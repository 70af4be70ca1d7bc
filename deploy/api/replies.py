"""How the ingress answers: a cached answer replayed as JSON or as a stream, and a live stream turned
into server-sent events (first chunk pulled before the response starts, so a failure before any token
gets a real HTTP status; a failure mid-stream becomes an OpenAI error event and [DONE])."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from deploy.api.errors import coe_error_body, error_body
from deploy.api.responses import SSE_DONE, StreamState, completion_chunks, completion_response, new_id, sse
from deploy.pipeline.metrics import Metrics
from deploy.pipeline.observe import RequestObs
from deploy.serve.seams import GatewayClient
from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from router.errors import CoeError
from router.types import RouteDecision

log = logging.getLogger("coe.ingress")


def cached_reply(
    hit: ChatResult,
    decision: RouteDecision,
    stream: bool,
    include_usage: bool,
    headers: dict[str, str],
    obs: RequestObs | None = None,
) -> Any:
    """A cache hit: the stored answer, cost 0, `coe.cache = "hit"`, as JSON or as a stream."""
    from fastapi.responses import JSONResponse, StreamingResponse

    result = dataclasses.replace(hit, cost_usd=0.0, latency_ms=0.0, attempts=())
    body = completion_response(result, decision)
    body["id"] = new_id()
    body["created"] = int(time.time())
    body["coe"]["cache"] = "hit"
    if obs is not None:
        obs.answered(body["id"], result)
    if not stream:
        return JSONResponse(body, headers=headers)
    chunks = completion_chunks(body)
    if chunks:
        chunks[0]["coe"] = body["coe"]
    events = [sse(c) for c in chunks]
    if include_usage:
        usage: dict[str, Any] = {k: body[k] for k in ("id", "created", "model") if k in body}
        events.append(
            sse(
                {
                    **usage,
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": body.get("usage"),
                    "coe": {"cost_usd": 0.0, "cache": "hit"},
                }
            )
        )
    events.append(SSE_DONE)

    async def replay() -> AsyncIterator[bytes]:
        for e in events:
            yield e

    return StreamingResponse(
        replay(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"}
    )


async def stream_events(
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
) -> AsyncIterator[bytes]:
    """Pull the first chunk before answering, so failures before any token get a real HTTP status;
    a failure mid-stream becomes an OpenAI error event followed by [DONE]. `on_done` gets the
    complete plain-text answer (the response cache)."""
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

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                for e in state.events(first):
                    yield e
            async for chunk in chunks:
                for e in state.events(chunk):
                    yield e
            for e in state.finish():
                yield e
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
            for e in state.error(coe_error_body(exc)):
                yield e
        except Exception as exc:  # never a traceback on the wire
            log.exception("stream failed: %s", type(exc).__name__)
            if obs is not None:
                obs.failed(exc, state.id)
            for e in state.error(error_body("internal server error", "internal_error")):
                yield e
        finally:
            if obs is not None and not obs.done:  # the client went away mid-stream
                obs.failed(asyncio.CancelledError(), state.id)

    return events()
