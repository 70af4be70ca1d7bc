"""The gateway deployment as a plain class: runs the ExpertPool (calls, failover, aggregation) and
keeps its registry snapshot current. `stream` is an async generator; the ingress consumes it through
a DeploymentHandle with `.options(stream=True)`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from deploy.serve.seams import RegistryReader
from deploy.serve.watch import SnapshotWatcher
from deploy.settings import Settings
from experts.types import ChatChunk, ChatRequest, ChatResult
from router.types import ExpertLoad, RegistrySnapshot, RouteDecision

log = logging.getLogger("coe.gateway")


def make_pool(snapshot: RegistrySnapshot, settings: Settings) -> Any:
    """The real ExpertPool with the knobs from settings."""
    from experts.pool import ExpertPool

    return ExpertPool.from_settings(snapshot, settings)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: RegistryReader,
        pool: Any = None,
        pool_factory: Callable[[RegistrySnapshot, Any], Any] = make_pool,
    ) -> None:
        self._registry = registry
        self.snapshot: RegistrySnapshot = registry.snapshot()
        self.pool = pool if pool is not None else pool_factory(self.snapshot, settings)
        self._started = False
        self._watcher = SnapshotWatcher(
            registry,
            self._apply_snapshot,
            interval_s=settings.registry_poll_s,
            revision=self.snapshot.revision,
            name="gateway",
        )

    async def _ensure_started(self) -> None:
        if not self._started:
            self._started = True
            await self.pool.start()
        await self._watcher.start()

    def _apply_snapshot(self, snapshot: RegistrySnapshot) -> None:
        self.snapshot = snapshot
        self.pool.update_snapshot(snapshot)

    async def refresh(self) -> bool:
        return await self._watcher.poll_once()

    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        await self._ensure_started()
        return await self.pool.complete(decision, request)

    async def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        await self._ensure_started()
        async for chunk in self.pool.stream(decision, request):
            yield chunk

    async def load(self) -> Mapping[str, ExpertLoad]:
        await self._ensure_started()
        return dict(self.pool.load())

    async def status(self) -> dict[str, Any]:
        """Readiness: enabled experts, and which of them the pool reports healthy."""
        await self._ensure_started()
        load = self.pool.load()
        enabled = sorted(n for n, e in self.snapshot.experts.items() if e.enabled)
        usable = [n for n in enabled if load.get(n, ExpertLoad()).healthy]
        return {"revision": self.snapshot.revision, "enabled": enabled, "usable": usable}

    async def aclose(self) -> None:
        await self._watcher.aclose()
        if self._started:
            await self.pool.aclose()


class ServeGateway(Gateway):
    """The gateway as Ray Serve constructs it (split topology): only the settings come in."""

    def __init__(self, settings: Settings) -> None:
        from registry import Registry

        super().__init__(settings, registry=Registry(settings.database_url))
