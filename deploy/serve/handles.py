"""The Ray Serve DeploymentHandle adapters the split topology's ingress calls the router and the gateway
through (deploy/serve/seams.py::RouterClient / GatewayClient). A call whose replica was lost is retried on
another replica; Ray's wrapped exceptions come back as our typed errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from experts.types import ChatChunk, ChatRequest, ChatResult
from router.errors import CoeError, RateLimited
from router.types import RouteDecision, RoutingOptions

log = logging.getLogger("coe.ingress")


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps a replica's exception in RayTaskError; give back our typed error when there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(exc, CoeError):
        return unwrap(cause)
    if type(exc).__name__ == "BackPressureError":
        return RateLimited("the service is at capacity; retry shortly", code="backpressure")
    return exc


_LOST_REPLICA_ERRORS = frozenset(
    {"RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "WorkerCrashedError"}
)


def replica_lost(exc: BaseException) -> bool:
    """True when a call failed because its replica's actor died or became unreachable (a node was
    lost, the process crashed) rather than because of the request: such a call is safe to retry on
    another replica. Matches Ray's RayActorError family by name, also when wrapped."""
    seen = 0
    while exc is not None and seen < 8:
        if any(c.__name__ in _LOST_REPLICA_ERRORS for c in type(exc).__mro__):
            return True
        nxt = getattr(exc, "cause", None) or exc.__cause__
        exc, seen = nxt, seen + 1  # type: ignore[assignment]
    return False


class _Retrying:
    """Retries a handle call whose replica was lost (Ray Serve routes the retry to a live replica).
    Requests that failed for any other reason are not retried."""

    deployment = ""

    def __init__(self, handle: Any, retries: int = 2, backoff_s: float = 0.05) -> None:
        self._h = handle
        self._retries = max(0, retries)
        self._backoff_s = backoff_s
        self.on_retry: Callable[[str], None] = lambda _deployment: None

    async def _retry_after(self, what: str, exc: BaseException, attempt: int) -> bool:
        """Whether attempt `attempt` (0-based) that failed with `exc` is tried again; backs off first."""
        if attempt >= self._retries or not replica_lost(exc):
            return False
        log.warning("%s: replica lost (%s); retry %d", what, type(exc).__name__, attempt + 1)
        self.on_retry(self.deployment)
        await asyncio.sleep(self._backoff_s * (attempt + 1))
        return True

    async def _call(self, method: str, *args: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await getattr(self._h, method).remote(*args)
            except Exception as exc:
                if not await self._retry_after(method, exc, attempt):
                    raise unwrap(exc) from None
            attempt += 1

    async def status(self) -> dict[str, Any]:
        return await self._h.status.remote()


class HandleRouter(_Retrying):
    deployment = "router"

    async def route(self, text: str, options: RoutingOptions) -> RouteDecision:
        return await self._call("route", text, options)

    async def route_embedded(self, text: str, options: RoutingOptions) -> tuple[RouteDecision, Any]:
        return await self._call("route_embedded", text, options)


class HandleGateway(_Retrying):
    deployment = "gateway"

    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        return await self._call("complete", decision, request)

    async def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Retried only until the first chunk arrives: after that the client has seen output."""
        attempt = 0
        while True:
            started = False
            try:
                async for chunk in self._h.options(stream=True).stream.remote(decision, request):
                    started = True
                    yield chunk
                return
            except Exception as exc:
                if started or not await self._retry_after("stream", exc, attempt):
                    raise unwrap(exc) from None
            attempt += 1
