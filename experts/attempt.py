"""One try of one expert, and the retry loop around it: the single sequence that calls and streams share.

    async for try_ in Retrying(slot, name, attempts, ...):  # up to retries + 1 tries, backoff between them
        async with try_ as call:     # lease -> breaker -> the body's call -> breaker verdict -> release
            return await call.client.chat(request)

A try that fails with a retryable error before its answer started reaching the caller (`call.commit()`) ends
quietly and the loop offers the next one after its backoff; any other failure leaves the loop as the typed
error. Every failed or skipped try is recorded as an `Attempt` in the request's list (the answer's
`attempts`, and `.attempts` on the error a failover ends with).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from experts.client import OpenAIExpertClient
from experts.slot import ExpertSlot, breaker_counts
from router.errors import CoeError, ExpertError, ExpertUnavailable, RateLimited

#: why an expert was not called at all (an Attempt's `error` then holds the reason, not an error class)
CIRCUIT_OPEN = "circuit_open"
REMOVED = "removed"
CONTEXT_TOO_SMALL = "context_too_small"
SKIPPED = (CIRCUIT_OPEN, REMOVED, CONTEXT_TOO_SMALL)
#: why aggregation stopped waiting for a candidate (experts/aggregate.py)
DEADLINE = "deadline"
CANCELLED_EARLY = "cancelled_early"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed or skipped try of one expert while serving a request."""

    expert: str
    #: the error's class name ("ExpertTimeout", "RateLimited", ...) or a reason the expert was skipped
    error: str
    message: str
    #: the expert's HTTP status, when it answered with one
    status: int | None = None
    #: the error's class, so an exhausted failover can raise the same kind of error
    error_class: type[CoeError] | None = field(default=None, compare=False)

    @classmethod
    def failed(cls, expert: str, exc: CoeError) -> Attempt:
        return cls(expert, type(exc).__name__, str(exc), getattr(exc, "upstream_status", None), type(exc))

    @classmethod
    def skipped(cls, expert: str, reason: str) -> Attempt:
        return cls(expert, reason, reason)

    def as_dict(self) -> dict[str, Any]:
        """The JSON view (the response's `coe.attempts`, metrics and traces read it)."""
        rec: dict[str, Any] = {"expert": self.expert, "error": self.error, "message": self.message}
        if self.status is not None:
            rec["status"] = self.status
        return rec


def as_dicts(attempts: Iterable[Attempt]) -> tuple[dict[str, Any], ...]:
    return tuple(a.as_dict() for a in attempts)


class ExpertCall:
    """What the body of one try gets: the expert's client, and `commit()` for when its answer reaches the
    caller."""

    def __init__(self, client: OpenAIExpertClient) -> None:
        self.client = client
        #: part of the answer reached the caller: a failure now can neither retry nor fail over
        self.committed = False
        #: the try failed in a way worth retrying (set when it ends)
        self.retry = False

    def commit(self) -> None:
        self.committed = True


@contextlib.asynccontextmanager
async def expert_call(
    slot: ExpertSlot, attempts: list[Attempt], call: ExpertCall, *, queue_timeout_s: float, may_retry: bool
) -> AsyncIterator[ExpertCall]:
    """One try: lease a concurrency slot (RateLimited when the queue wait runs out), pass the breaker
    (ExpertUnavailable when open), run the body, give the breaker its verdict, release. A retryable failure
    before `commit()` is swallowed when `may_retry` (`call.retry` is then set); other failures propagate."""
    try:
        await slot.acquire(queue_timeout_s)
    except RateLimited as exc:
        attempts.append(Attempt.failed(slot.name, exc))
        raise
    try:
        if not slot.breaker.allow():
            attempts.append(Attempt.skipped(slot.name, CIRCUIT_OPEN))
            raise ExpertUnavailable(
                f"expert {slot.name!r}: circuit open", expert=slot.name, reason=CIRCUIT_OPEN
            )
        t0 = slot.started()
        verdict = False
        try:
            yield call
        except ExpertError as exc:
            slot.finished(t0, ok=False)
            if breaker_counts(exc):
                slot.breaker.record_failure()
                verdict = True
            if call.committed:
                raise
            attempts.append(Attempt.failed(slot.name, exc))
            call.retry = may_retry and exc.retryable and slot.breaker.available
            if not call.retry:
                raise
        else:
            slot.breaker.record_success()
            verdict = True
            slot.finished(t0, ok=True)
        finally:
            if not verdict:  # cancelled, a caller-side error, a 4xx about the request: free a half-open probe
                slot.breaker.release()
    finally:
        slot.release()


def backoff_delay(base_s: float, retry: int, draw: Callable[[], float] = random.random) -> float:
    """The wait before retry `retry` (0: the first): exponential, `base_s * 2**retry` at most, with jitter
    (a uniform draw over its upper half), so that callers whose tries failed together do not retry in step."""
    ceiling = base_s * 2**retry
    return ceiling / 2 * (1 + draw())


class Retrying:
    """The retry loop: offers up to `retries + 1` tries of one expert (`async for`), waiting
    `backoff_delay(backoff_s, i)` before retry i+1, and only after a try that ended with `call.retry`."""

    def __init__(
        self,
        slot: ExpertSlot | None,
        name: str,
        attempts: list[Attempt],
        *,
        retries: int,
        queue_timeout_s: float,
        backoff_s: float,
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self._slot = slot
        self._name = name
        self._attempts = attempts
        self._retries = retries
        self._queue_timeout_s = queue_timeout_s
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._tries = 0
        self._call: ExpertCall | None = None

    @property
    def committed(self) -> bool:
        """Whether the current try's answer has started reaching the caller."""
        return self._call is not None and self._call.committed

    def __aiter__(self) -> Retrying:
        return self

    async def __anext__(self) -> contextlib.AbstractAsyncContextManager[ExpertCall]:
        if self._slot is None:  # left the registry since the request's candidates were chosen
            self._attempts.append(Attempt.skipped(self._name, REMOVED))
            raise ExpertUnavailable(f"expert {self._name!r} was removed", expert=self._name, reason=REMOVED)
        if self._call is not None:
            if not self._call.retry:
                raise StopAsyncIteration
            await self._sleep(backoff_delay(self._backoff_s, self._tries - 1))
        self._call = ExpertCall(self._slot.client)
        may_retry = self._tries < self._retries
        self._tries += 1
        return expert_call(
            self._slot, self._attempts, self._call, queue_timeout_s=self._queue_timeout_s, may_retry=may_retry
        )
