"""The experts' live state and the failover calls: keeps a request alive while any eligible expert can
serve it.

Per expert (`experts.slot.ExpertSlot`): a client over one shared, pooled `httpx.AsyncClient`; a concurrency
limit (`ExpertInfo.max_concurrency`, with a short queue, then `RateLimited`); retries with exponential backoff
on retryable errors only (`experts.attempt`); a circuit breaker fed by calls and by active health checks
(GET /models); and a sliding window of load figures that the router's load bias reads.

Failover order: `decision.experts`, then `decision.alternates`. A streamed answer fails over only before
its first chunk; a failure after that ends the stream by raising the typed `ExpertError`.

An expert's own 4xx about the request (400/413/422: a bad JSON schema, an unsupported parameter) still
fails over, since another expert may accept it; when none does, the first such answer is relayed to the
client as `ExpertRejected` with the expert's status and message. A `context_length_exceeded` answer fails
over only to experts with a larger `max_context`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Self

import httpx

from experts.attempt import (
    CONTEXT_TOO_SMALL,
    SKIPPED,
    Attempt,
    Retrying,
    as_dicts,
)
from experts.breaker import CircuitBreaker
from experts.client import OpenAIExpertClient
from experts.slot import ExpertSlot, breaker_counts
from experts.types import ChatChunk, ChatRequest, ChatResult
from router.errors import (
    CoeError,
    ExpertError,
    ExpertHTTPError,
    ExpertRejected,
    ExpertUnavailable,
    NoHealthyExpert,
    RateLimited,
)
from router.types import ExpertLoad, RegistrySnapshot, RouteDecision

log = logging.getLogger(__name__)


class Rejections:
    """What the experts said about the request itself during one failover: the first 4xx to relay, and
    the context window that proved too small (experts no larger are skipped)."""

    def __init__(self) -> None:
        self.first: ExpertHTTPError | None = None
        self.context_floor = 0

    def note(self, exc: BaseException, max_context: int) -> None:
        if not isinstance(exc, ExpertHTTPError):
            return
        if exc.context_exceeded:
            self.context_floor = max(self.context_floor, max_context)
            if self.first is None or not self.first.rejects_request:
                self.first = exc
        elif exc.rejects_request and (self.first is None or self.first.context_exceeded):
            self.first = exc

    def too_small(self, max_context: int) -> bool:
        return bool(self.context_floor) and max_context <= self.context_floor

    def relayed(self) -> ExpertRejected | None:
        exc = self.first
        if exc is None:
            return None
        err = exc.upstream_error or {}
        code = err.get("code") or ("context_length_exceeded" if exc.context_exceeded else None)
        return ExpertRejected(
            str(err.get("message") or exc.message),
            status=exc.upstream_status or 400,
            error_type=str(err.get("type") or "invalid_request_error"),
            expert=exc.expert,
            param=err.get("param"),  # type: ignore[arg-type]
            code=str(code) if code is not None else None,
        )


def exhausted(attempts: list[Attempt], tried: bool, said: Rejections) -> CoeError:
    """The error a failover ends with when no expert answered, carrying the attempts: an expert's 4xx about
    the request, relayed; NoHealthyExpert when no expert could be called; RateLimited when every one was busy
    or skipped; else the kind of the last expert's error, summarising the last four failures."""
    err = said.relayed() or _none_answered(attempts, tried)
    err.attempts = as_dicts(attempts)
    return err


def _none_answered(attempts: list[Attempt], tried: bool) -> CoeError:
    if not tried:
        listed = f" ({', '.join(a.expert + ': ' + a.error for a in attempts)})" if attempts else ""
        return NoHealthyExpert("no enabled, healthy expert can serve this request" + listed)
    if all(a.error == "RateLimited" or a.error in SKIPPED for a in attempts):
        return RateLimited("every eligible expert is at its concurrency limit", code="experts_busy")
    failed = [a for a in attempts if a.error not in SKIPPED]
    summary = "; ".join(f"{a.expert}: {a.message}" for a in failed[-4:])
    last = failed[-1]
    cls = last.error_class if last.error_class and issubclass(last.error_class, ExpertError) else ExpertError
    return cls(f"all eligible experts failed ({summary})", expert=last.expert, status_code=last.status)


class FailoverPool:
    """The experts of one registry snapshot, called with retries and failover (no aggregation: see
    `experts.pool.ExpertPool`, which adds the dispatch by RouteDecision)."""

    def __init__(
        self,
        snapshot: RegistrySnapshot,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = 1,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 15.0,
        health_interval_s: float = 10.0,
        aggregate_deadline_s: float = 60.0,
        queue_timeout_s: float = 2.0,
        backoff_s: float = 0.2,
        load_window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.retries = max(0, retries)
        self.breaker_failures = breaker_failures
        self.breaker_cooldown_s = breaker_cooldown_s
        self.health_interval_s = health_interval_s
        self.aggregate_deadline_s = aggregate_deadline_s
        self.queue_timeout_s = queue_timeout_s
        self.backoff_s = backoff_s
        self.load_window_s = load_window_s
        self.clock = clock
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            timeout=None,  # each client sets its expert's timeout per request
            follow_redirects=False,
        )
        self._slots: dict[str, ExpertSlot] = {}
        self._health_task: asyncio.Task[None] | None = None
        self.snapshot = snapshot
        self.update_snapshot(snapshot)

    @classmethod
    def from_settings(cls, snapshot: RegistrySnapshot, settings: Any, **kw: Any) -> Self:
        """Build from `deploy.settings.Settings` (duck-typed, so experts/ does not import deploy/)."""
        knobs = {
            k: getattr(settings, k)
            for k in (
                "retries",
                "breaker_failures",
                "breaker_cooldown_s",
                "health_interval_s",
                "aggregate_deadline_s",
            )
            if hasattr(settings, k)
        }
        return cls(snapshot, **{**knobs, **kw})

    # -------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the periodic health checks (idempotent)."""
        if self._health_task is None and self.health_interval_s > 0:
            self._health_task = asyncio.create_task(self._health_loop(), name="coe-expert-health")

    async def aclose(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def update_snapshot(self, snapshot: RegistrySnapshot) -> None:
        """Hot reload: new experts are usable at once; removed ones finish their in-flight calls (their
        slots stay referenced by those calls) and get no new ones; changed ones get a fresh slot."""
        slots: dict[str, ExpertSlot] = {}
        for name, info in snapshot.experts.items():
            if not info.enabled:
                continue
            old = self._slots.get(name)
            if old is not None and old.info == info:
                slots[name] = old
                continue
            breaker = CircuitBreaker(self.breaker_failures, self.breaker_cooldown_s, clock=self.clock)
            slots[name] = ExpertSlot(
                info, OpenAIExpertClient(info, self._http), breaker, self.clock, self.load_window_s
            )
        self._slots = slots
        self.snapshot = snapshot

    # ------------------------------------------------------------------------------------ state
    def load(self) -> dict[str, ExpertLoad]:
        return {name: slot.load() for name, slot in self._slots.items()}

    def breaker_state(self, expert: str) -> str:
        slot = self._slots.get(expert)
        return slot.breaker.state if slot else "unknown"

    def client(self, expert: str) -> OpenAIExpertClient:
        slot = self._slots.get(expert)
        if slot is None:
            raise NoHealthyExpert(f"expert {expert!r} is not in the registry or is disabled")
        return slot.client

    def candidates(self, decision: RouteDecision) -> list[str]:
        """The failover order: chosen experts, then alternates; unknown or disabled ones left out."""
        seen: dict[str, None] = {}
        for name in (*decision.expert_names, *decision.alternates):
            if name in self._slots:
                seen.setdefault(name)
        return list(seen)

    # ------------------------------------------------------------------------------ health checks
    async def _health_loop(self) -> None:
        while True:
            try:
                await self.check_health()
            except Exception:  # never let the loop die
                log.exception("expert health check round failed")
            await asyncio.sleep(self.health_interval_s)

    async def check_health(self) -> dict[str, bool]:
        """One round of GET /models against every expert; feeds the breakers. Returns name -> ok."""
        slots = dict(self._slots)

        async def probe(slot: ExpertSlot) -> bool:
            try:
                await slot.client.models()
                ok = True
            except ExpertError as exc:
                ok = not breaker_counts(exc)  # a 404 on /models still proves the server is up
            slot.health_ok = ok
            if ok:
                if slot.breaker.state != "closed" and slot.breaker.allow():
                    slot.breaker.record_success()
            else:
                slot.breaker.record_failure()
            return ok

        results = await asyncio.gather(*(probe(s) for s in slots.values()))
        return dict(zip(slots, results, strict=True))

    # ------------------------------------------------------------------------------------ calls
    def _retrying(self, name: str, attempts: list[Attempt]) -> Retrying:
        return Retrying(
            self._slots.get(name),
            name,
            attempts,
            retries=self.retries,
            queue_timeout_s=self.queue_timeout_s,
            backoff_s=self.backoff_s,
            sleep=self._sleep,
        )

    def _max_context(self, name: str) -> int:
        slot = self._slots.get(name)
        return slot.client.info.max_context if slot is not None else 0

    def _eligible(self, names: Iterable[str], attempts: list[Attempt], said: Rejections) -> Iterator[str]:
        """`names` in order, less those whose context window already proved too small (read lazily, as
        the failover learns)."""
        for name in names:
            if said.too_small(self._max_context(name)):
                attempts.append(Attempt.skipped(name, CONTEXT_TOO_SMALL))
            else:
                yield name

    async def call_expert(self, name: str, request: ChatRequest, attempts: list[Attempt]) -> ChatResult:
        """One expert, with retries on retryable errors. Raises the last ExpertError, RateLimited, or
        ExpertUnavailable (circuit open / removed); every failure is appended to `attempts`."""
        async for try_ in self._retrying(name, attempts):
            async with try_ as call:
                return await call.client.chat(request)
        raise AssertionError("unreachable: the last try raises")  # pragma: no cover

    async def failover(
        self, names: Iterable[str], request: ChatRequest, attempts: list[Attempt] | None = None
    ) -> ChatResult:
        """Try `names` in order until one answers; the result carries the failed attempts."""
        attempts = [] if attempts is None else attempts
        tried = False
        said = Rejections()
        for name in self._eligible(names, attempts, said):
            try:
                result = await self.call_expert(name, request, attempts)
            except ExpertUnavailable:
                continue
            except (ExpertError, RateLimited) as exc:
                tried = True
                said.note(exc, self._max_context(name))
                continue
            return dataclasses.replace(result, attempts=as_dicts(attempts))
        raise exhausted(attempts, tried, said)

    async def stream_failover(
        self, names: Iterable[str], request: ChatRequest, attempts: list[Attempt] | None = None
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream from the first expert in `names` that produces a first chunk."""
        attempts = [] if attempts is None else attempts
        tried = False
        said = Rejections()
        for name in self._eligible(names, attempts, said):
            retrying = self._retrying(name, attempts)
            try:
                async for try_ in retrying:
                    async with try_ as call:
                        async with contextlib.aclosing(call.client.stream(request)) as chunks:
                            async for chunk in chunks:
                                call.commit()
                                yield chunk
                        return
            except ExpertUnavailable:
                continue
            except (ExpertError, RateLimited) as exc:
                if retrying.committed:
                    raise  # past the first chunk there is no failover: the stream ends with the error
                tried = True
                said.note(exc, self._max_context(name))
        raise exhausted(attempts, tried, said)
