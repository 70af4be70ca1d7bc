"""How a RouteDecision is served: one chosen expert → failover along the alternates; several → aggregation.

The one place that makes that choice (`experts.pool.ExpertPool.complete` / `.stream` call it), so the
failover core (experts/failover.py) knows nothing of aggregation and aggregation (experts/aggregate.py)
depends on the failover core one way only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from experts.aggregate import aggregate, aggregate_stream
from experts.failover import FailoverPool
from experts.types import ChatChunk, ChatRequest, ChatResult
from router.types import RouteDecision


def aggregates(decision: RouteDecision) -> bool:
    """Whether the decision chose several experts, whose answers are then combined."""
    return len(decision.experts) > 1


async def complete(pool: FailoverPool, decision: RouteDecision, request: ChatRequest) -> ChatResult:
    """Answer with the chosen expert (failing over along the alternates), or aggregate when the decision
    chose several experts."""
    if aggregates(decision):
        return await aggregate(pool, decision, request)
    return await pool.failover(pool.candidates(decision), request)


async def stream(
    pool: FailoverPool, decision: RouteDecision, request: ChatRequest
) -> AsyncGenerator[ChatChunk, None]:
    """The streamed counterpart of `complete`."""
    if aggregates(decision):
        chunks = aggregate_stream(pool, decision, request)
    else:
        chunks = pool.stream_failover(pool.candidates(decision), request)
    # aclosing: a consumer that stops early must release the expert's slot now, not at GC time
    async with contextlib.aclosing(chunks) as it:
        async for chunk in it:
            yield chunk
