"""The live state of one expert in the pool: its client, circuit breaker and concurrency limit, and a sliding
window of load figures (what the router's load bias reads)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from experts.breaker import CircuitBreaker
from experts.client import OpenAIExpertClient
from router.errors import ExpertError, ExpertHTTPError, RateLimited
from router.types import ExpertInfo, ExpertLoad


def breaker_counts(exc: ExpertError) -> bool:
    """Whether an error says something about the expert's health (a 400 about the request does not)."""
    return not (
        isinstance(exc, ExpertHTTPError)
        and exc.upstream_status is not None
        and 400 <= exc.upstream_status < 500
        and exc.upstream_status != 429
    )


class ExpertSlot:
    """One expert's client, breaker, concurrency slots and recent load."""

    def __init__(
        self,
        info: ExpertInfo,
        client: OpenAIExpertClient,
        breaker: CircuitBreaker,
        clock: Callable[[], float],
        window_s: float,
    ) -> None:
        self.info = info
        self.client = client
        self.breaker = breaker
        self.sem = asyncio.Semaphore(max(1, info.max_concurrency))
        self.in_flight = 0
        self.health_ok = True
        self._clock = clock
        self._window_s = window_s
        self._starts: deque[float] = deque()
        self._outcomes: deque[tuple[float, float, bool]] = deque()  # (time, latency_ms, ok)

    @property
    def name(self) -> str:
        return self.info.name

    def _trim(self, now: float) -> None:
        edge = now - self._window_s
        while self._starts and self._starts[0] < edge:
            self._starts.popleft()
        while self._outcomes and self._outcomes[0][0] < edge:
            self._outcomes.popleft()

    def started(self) -> float:
        now = self._clock()
        self._starts.append(now)
        self._trim(now)
        return now

    def finished(self, t0: float, ok: bool) -> None:
        now = self._clock()
        self._outcomes.append((now, (now - t0) * 1000.0, ok))
        self._trim(now)

    def load(self) -> ExpertLoad:
        self._trim(self._clock())
        oks = [lat for _, lat, ok in self._outcomes if ok]
        n = len(self._outcomes)
        return ExpertLoad(
            in_flight=self.in_flight,
            recent_requests=len(self._starts),
            latency_ms=sum(oks) / len(oks) if oks else 0.0,
            error_rate=(n - len(oks)) / n if n else 0.0,
            healthy=self.health_ok and self.breaker.state != "open",
        )

    async def acquire(self, queue_timeout_s: float) -> None:
        """Take one of the expert's concurrency slots; wait up to `queue_timeout_s`, then RateLimited."""
        if self.sem.locked():
            try:
                async with asyncio.timeout(queue_timeout_s if queue_timeout_s > 0 else 0):
                    await self.sem.acquire()
            except TimeoutError:
                raise RateLimited(
                    f"expert {self.info.name!r} is at its concurrency limit ({self.info.max_concurrency})",
                    code="expert_busy",
                ) from None
        else:
            await self.sem.acquire()
        self.in_flight += 1

    def release(self) -> None:
        """Give back the slot `acquire` took."""
        self.in_flight -= 1
        self.sem.release()
