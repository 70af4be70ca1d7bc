"""The expert pool: calls the experts a RouteDecision chose, and keeps a request alive while any eligible
expert can serve it.

  experts/pool.py       ExpertPool: the failover core plus the dispatch by decision (what deploy/ uses)
  experts/dispatch.py   one chosen expert → failover along the alternates; several → aggregation
  experts/aggregate.py  combining several experts' answers (synthesize, vote, best)
  experts/failover.py   FailoverPool: per-expert state, health checks, failover for calls and streams
  experts/attempt.py    one try of one expert (lease → breaker → call → verdict → release), the retry loop,
                        and the `Attempt` record of each failed or skipped try
  experts/slot.py       one expert's client, breaker, concurrency limit and load window

Imports go one way, top to bottom: pool → dispatch → aggregate → failover → attempt → slot.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from experts import dispatch
from experts.failover import FailoverPool
from experts.types import ChatChunk, ChatRequest, ChatResult
from router.types import RouteDecision


class ExpertPool(FailoverPool):
    """The experts of one registry snapshot, served by RouteDecision (see experts/failover.py for the
    failover, health and load rules, experts/aggregate.py for aggregation)."""

    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        """Answer with the chosen expert (failing over along the alternates), or aggregate when the
        decision chose several experts."""
        return await dispatch.complete(self, decision, request)

    def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        """Stream the answer; fails over only before the first chunk (a later failure raises ExpertError)."""
        return dispatch.stream(self, decision, request)
