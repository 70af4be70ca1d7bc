"""The expert pool: calls the experts a RouteDecision chose, and keeps a request alive while any eligible
expert can serve it.

Per expert: a client over one shared, pooled `httpx.AsyncClient`; a concurrency limit
(`ExpertInfo.max_concurrency`, with a short queue, then `RateLimited`); retries with exponential backoff on
retryable errors only; a circuit breaker fed by calls and by active health checks (GET /models); and a
sliding window of load figures that the router's load bias reads.

Failover order: `decision.experts`, then `decision.alternates`. A streamed answer fails over only before
its first chunk; a failure after that ends the stream by raising the typed `ExpertError`.

An expert's own 4xx about the request (400/413/422: a bad JSON schema, an unsupported parameter) still
fails over, since another expert may accept it; when none does, the first such answer is relayed to the
client as `ExpertRejected` with the expert's status and message. A `context_length_exceeded` answer fails
over only to experts with a larger `max_context`.
When the decision chose several experts, `experts.aggregate` combines their answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpx

from experts.breaker import CircuitBreaker
from experts.client import OpenAIExpertClient
from experts.types import ChatChunk, ChatRequest, ChatResult
from router.errors import (
    CoeError,
    ExpertError,
    ExpertHTTPError,
    ExpertRejected,
    NoHealthyExpert,
    RateLimited,
)
from router.types import ExpertInfo, ExpertLoad, RegistrySnapshot, RouteDecision

log = logging.getLogger(__name__)


def _breaker_counts(exc: ExpertError) -> bool:
    """Whether an error says something about the expert's health (a 400 about the request does not)."""
    return not (
        isinstance(exc, ExpertHTTPError)
        and exc.upstream_status is not None
        and 400 <= exc.upstream_status < 500
        and exc.upstream_status != 429
    )


def attempt_record(expert: str, exc: BaseException | str) -> dict[str, Any]:
    if isinstance(exc, str):
        return {"expert": expert, "error": exc, "message": exc}
    rec: dict[str, Any] = {"expert": expert, "error": type(exc).__name__, "message": str(exc)}
    status = getattr(exc, "upstream_status", None)
    if status is not None:
        rec["status"] = status
    return rec


class _Unavailable(Exception):
    """The expert cannot take a call now (circuit open or removed); try the next one."""


class _Rejections:
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


class _Slot:
    """Live state of one expert."""

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

    @contextlib.asynccontextmanager
    async def lease(self, queue_timeout_s: float) -> AsyncIterator[None]:
        """Hold one of the expert's concurrency slots; wait up to `queue_timeout_s`, then RateLimited."""
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
        try:
            yield
        finally:
            self.in_flight -= 1
            self.sem.release()


class ExpertPool:
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
        self._slots: dict[str, _Slot] = {}
        self._health_task: asyncio.Task[None] | None = None
        self.snapshot = snapshot
        self.update_snapshot(snapshot)

    @classmethod
    def from_settings(cls, snapshot: RegistrySnapshot, settings: Any, **kw: Any) -> ExpertPool:
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

    async def __aenter__(self) -> ExpertPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def update_snapshot(self, snapshot: RegistrySnapshot) -> None:
        """Hot reload: new experts are usable at once; removed ones finish their in-flight calls (their
        slots stay referenced by those calls) and get no new ones; changed ones get a fresh slot."""
        slots: dict[str, _Slot] = {}
        for name, info in snapshot.experts.items():
            if not info.enabled:
                continue
            old = self._slots.get(name)
            if old is not None and old.info == info:
                slots[name] = old
                continue
            breaker = CircuitBreaker(self.breaker_failures, self.breaker_cooldown_s, clock=self.clock)
            slots[name] = _Slot(
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

        async def probe(slot: _Slot) -> bool:
            try:
                await slot.client.models()
                ok = True
            except ExpertError as exc:
                ok = not _breaker_counts(exc)  # a 404 on /models still proves the server is up
            slot.health_ok = ok
            if ok:
                if slot.breaker.state != "closed" and slot.breaker.allow():
                    slot.breaker.record_success()
            else:
                slot.breaker.record_failure()
            return ok

        results = await asyncio.gather(*(probe(s) for s in slots.values()))
        return dict(zip(slots, results, strict=True))

    # ---------------------------------------------------------------------------- single expert
    async def call_expert(
        self, name: str, request: ChatRequest, attempts: list[dict[str, Any]]
    ) -> ChatResult:
        """One expert, with retries on retryable errors. Raises the last ExpertError, RateLimited, or
        _Unavailable (circuit open / gone); every failure is appended to `attempts`."""
        slot = self._slots.get(name)
        if slot is None:
            attempts.append(attempt_record(name, "removed"))
            raise _Unavailable(name)
        for i in range(self.retries + 1):
            try:
                async with slot.lease(self.queue_timeout_s):
                    if not slot.breaker.allow():
                        attempts.append(attempt_record(name, "circuit_open"))
                        raise _Unavailable(name)
                    t0 = slot.started()
                    verdict = False
                    try:
                        result = await slot.client.chat(request)
                        slot.breaker.record_success()
                        verdict = True
                        slot.finished(t0, ok=True)
                        return result
                    except ExpertError as exc:
                        slot.finished(t0, ok=False)
                        if _breaker_counts(exc):
                            slot.breaker.record_failure()
                            verdict = True
                        attempts.append(attempt_record(name, exc))
                        if not exc.retryable or i >= self.retries or not slot.breaker.available:
                            raise
                    finally:
                        if not verdict:
                            slot.breaker.release()
            except RateLimited as exc:
                attempts.append(attempt_record(name, exc))
                raise
            await self._sleep(self.backoff_s * (2**i))
        raise AssertionError("unreachable")  # pragma: no cover

    async def failover(
        self, names: Iterable[str], request: ChatRequest, attempts: list[dict[str, Any]] | None = None
    ) -> ChatResult:
        """Try `names` in order until one answers; the result carries the failed attempts."""
        attempts = [] if attempts is None else attempts
        tried = False
        said = _Rejections()
        for name in names:
            if said.too_small(self._max_context(name)):
                attempts.append(attempt_record(name, "context_too_small"))
                continue
            try:
                result = await self.call_expert(name, request, attempts)
            except _Unavailable:
                continue
            except (ExpertError, RateLimited) as exc:
                tried = True
                said.note(exc, self._max_context(name))
                continue
            return dataclasses.replace(result, attempts=tuple(attempts))
        raise self._exhausted(attempts, tried, said)

    def _max_context(self, name: str) -> int:
        slot = self._slots.get(name)
        return slot.client.info.max_context if slot is not None else 0

    def _exhausted(
        self, attempts: list[dict[str, Any]], tried: bool, said: _Rejections | None = None
    ) -> CoeError:
        relayed = said.relayed() if said is not None else None
        if relayed is not None:
            relayed.attempts = tuple(attempts)  # type: ignore[attr-defined]
            return relayed
        if not tried:
            err: CoeError = NoHealthyExpert(
                "no enabled, healthy expert can serve this request"
                + (f" ({', '.join(a['expert'] + ': ' + a['error'] for a in attempts)})" if attempts else "")
            )
        elif all(
            a["error"] in ("RateLimited", "circuit_open", "removed", "context_too_small") for a in attempts
        ):
            err = RateLimited("every eligible expert is at its concurrency limit", code="experts_busy")
        else:
            failed = [
                a for a in attempts if a["error"] not in ("circuit_open", "removed", "context_too_small")
            ]
            summary = "; ".join(f"{a['expert']}: {a['message']}" for a in failed[-4:])
            last = failed[-1]
            cls = {c.__name__: c for c in _expert_error_classes()}.get(last["error"], ExpertError)
            err = cls(
                f"all eligible experts failed ({summary})",
                expert=last["expert"],
                status_code=last.get("status"),
            )
        err.attempts = tuple(attempts)  # type: ignore[attr-defined]
        return err

    # ------------------------------------------------------------------------------ streaming
    async def stream_failover(
        self, names: Iterable[str], request: ChatRequest, attempts: list[dict[str, Any]] | None = None
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream from the first expert in `names` that produces a first chunk."""
        attempts = [] if attempts is None else attempts
        tried = False
        said = _Rejections()
        for name in names:
            slot = self._slots.get(name)
            if slot is None:
                continue
            if said.too_small(slot.client.info.max_context):
                attempts.append(attempt_record(name, "context_too_small"))
                continue
            for i in range(self.retries + 1):
                retry = False
                try:
                    async with slot.lease(self.queue_timeout_s):
                        if not slot.breaker.allow():
                            attempts.append(attempt_record(name, "circuit_open"))
                            break
                        tried = True
                        t0 = slot.started()
                        verdict = False
                        agen = slot.client.stream(request)
                        try:
                            try:
                                first = await agen.__anext__()
                            except ExpertError as exc:
                                slot.finished(t0, ok=False)
                                if _breaker_counts(exc):
                                    slot.breaker.record_failure()
                                    verdict = True
                                attempts.append(attempt_record(name, exc))
                                said.note(exc, slot.client.info.max_context)
                                retry = exc.retryable and i < self.retries and slot.breaker.available
                            else:
                                yield first
                                try:
                                    async for chunk in agen:
                                        yield chunk
                                except ExpertError as exc:
                                    # Past the first chunk there is no failover: end with the error.
                                    slot.finished(t0, ok=False)
                                    if _breaker_counts(exc):
                                        slot.breaker.record_failure()
                                        verdict = True
                                    raise
                                slot.breaker.record_success()
                                verdict = True
                                slot.finished(t0, ok=True)
                                return
                        finally:
                            if not verdict:
                                slot.breaker.release()
                            await agen.aclose()
                except RateLimited as exc:
                    tried = True
                    attempts.append(attempt_record(name, exc))
                    break
                if not retry:
                    break
                await self._sleep(self.backoff_s * (2**i))
        raise self._exhausted(attempts, tried, said)

    # ------------------------------------------------------------------------------- public API
    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        """Answer with the chosen expert (failing over along the alternates), or aggregate when the
        decision chose several experts."""
        if len(decision.experts) > 1:
            from experts.aggregate import aggregate

            return await aggregate(self, decision, request)
        return await self.failover(self.candidates(decision), request)

    async def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        if len(decision.experts) > 1:
            from experts.aggregate import aggregate_stream

            # aclosing: a consumer that stops early must release the expert's slot now, not at GC time
            async with contextlib.aclosing(aggregate_stream(self, decision, request)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        async with contextlib.aclosing(self.stream_failover(self.candidates(decision), request)) as chunks:
            async for chunk in chunks:
                yield chunk


def _expert_error_classes() -> list[type[ExpertError]]:
    out: list[type[ExpertError]] = []
    todo: list[type[ExpertError]] = [ExpertError]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out
