"""The router deployment as a plain class: embed + classify (dynamically batched), then decide.

`probabilities_batch(texts)` is the batch function; the app builder wraps it with `@serve.batch` and
sets `batched = True`, so concurrent requests on one replica share one embedding call. A request that
is alone on its replica skips the batcher (no `batch_wait_s` wait). Constructed directly (unbatched)
in tests.

Hot reload: a SnapshotWatcher swaps the registry snapshot; when the registry setting `router_artifact`
names a different artifact (`coe router deploy DIR`), the new router loads in a background thread and
replaces the old one in one assignment; requests keep using the old one until then."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from deploy.serve.seams import RegistryReader
from deploy.serve.watch import SnapshotWatcher
from deploy.settings import Settings
from router.errors import ArtifactError
from router.types import ExpertLoad, RegistrySnapshot, RouteDecision, RoutingOptions

log = logging.getLogger("coe.router")

ARTIFACT_SETTING = "router_artifact"


class RouterLike(Protocol):
    version: str

    def probabilities(self, texts: list[str]) -> Any: ...

    def decide(
        self,
        probs_row: Any,
        snapshot: RegistrySnapshot,
        load: Mapping[str, ExpertLoad],
        options: RoutingOptions,
    ) -> RouteDecision: ...


def load_router(artifact: str | Path, settings: Settings) -> Any:
    from router.core import Router

    return Router.load(
        artifact,
        embedder_model=settings.embedder_model,
        threads=settings.torch_threads,
        backend=settings.embedder_backend,
        cache_dir=settings.data_dir,
    )


def artifact_from_registry(registry: RegistryReader, default: Path) -> Path:
    """The artifact the registry names (`coe router deploy`), else the settings default."""
    getter = getattr(registry, "get_setting", None)
    value = getter(ARTIFACT_SETTING) if getter is not None else None
    return Path(value) if value else Path(default)


class RouterService:
    batched: bool = False  # set by the app builder when probabilities_batch is wrapped by @serve.batch

    def __init__(
        self,
        settings: Settings,
        *,
        registry: RegistryReader,
        router: RouterLike | None = None,
        load_source: Callable[[], Awaitable[Mapping[str, ExpertLoad]]] | None = None,
        loader: Callable[[str | Path, Any], Any] = load_router,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._loader = loader
        self.artifact = artifact_from_registry(registry, settings.router_artifact)
        self.router: Any = router if router is not None else loader(self.artifact, settings)
        self.snapshot: RegistrySnapshot = registry.snapshot()
        self.load: Mapping[str, ExpertLoad] = {}
        self._load_source = load_source
        self._watcher = SnapshotWatcher(
            registry,
            self._apply_snapshot,
            interval_s=settings.registry_poll_s,
            revision=self.snapshot.revision,
            name="router",
        )
        self._load_task: asyncio.Task[None] | None = None
        self._swap_task: asyncio.Task[None] | None = None
        self.swaps = 0
        self.last_swap_error: str | None = None
        self._in_flight = 0  # route() calls on this replica now
        self._no_direct_call = asyncio.Event()
        self._no_direct_call.set()
        self.batched_calls = 0
        self.direct_calls = 0

    # ----- background ---------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        self._watcher.ensure_started()
        if self._load_source is not None and (self._load_task is None or self._load_task.done()):
            self._load_task = asyncio.get_running_loop().create_task(self._poll_load())

    async def _poll_load(self) -> None:
        assert self._load_source is not None
        while True:
            try:
                self.load = dict(await self._load_source())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # stale load only weakens balancing; never fail routing for it
                log.debug("load poll failed: %s", exc)
            await asyncio.sleep(1.0)

    async def _apply_snapshot(self, snapshot: RegistrySnapshot) -> None:
        self.snapshot = snapshot
        try:
            wanted = await asyncio.to_thread(
                artifact_from_registry, self._registry, self._settings.router_artifact
            )
        except Exception as exc:
            log.warning("cannot read the router_artifact setting: %s", exc)
            return
        if wanted.resolve() != self.artifact.resolve() and (
            self._swap_task is None or self._swap_task.done()
        ):
            self._swap_task = asyncio.get_running_loop().create_task(self._swap_router(wanted))

    async def _swap_router(self, artifact: Path) -> None:
        log.info("loading router artifact %s in the background", artifact)
        try:
            new = await asyncio.to_thread(self._loader, artifact, self._settings)
        except Exception as exc:  # keep serving with the old router
            self.last_swap_error = f"{artifact}: {exc}"
            self.artifact = artifact  # do not retry a broken artifact on every poll
            log.error(
                "router artifact %s failed to load; keeping %s: %s",
                artifact,
                getattr(self.router, "version", "?"),
                exc,
            )
            return
        self.router, self.artifact = new, artifact
        self.swaps += 1
        self.last_swap_error = None
        log.info("router swapped to %s (%s)", getattr(new, "version", "?"), artifact)

    async def refresh(self) -> bool:
        """Poll the registry once now (tests, and `coe up` right after seeding)."""
        applied = await self._watcher.poll_once()
        if self._swap_task is not None:
            await self._swap_task
        return applied

    # ----- routing ------------------------------------------------------------------------------
    async def probabilities_batch(self, texts: list[str]) -> list[tuple[Any, dict[str, float], Any, Any]]:
        """Embed + classify a batch in a worker thread (the event loop keeps accepting requests):
        per text, (probabilities, timings, embedding or None, quality estimate or None)."""
        probs, timings, emb, est = await asyncio.to_thread(_timed_probabilities, self.router, list(texts))
        timings["batch_size"] = float(len(texts))
        return [
            (probs[i], dict(timings), None if emb is None else emb[i], None if est is None else est[i])
            for i in range(len(texts))
        ]

    async def _probabilities(self, text: str) -> tuple[Any, ...]:
        """Through the dynamic batcher when other requests are in flight on this replica; a lone
        request skips it, so it does not wait `batch_wait_s` for a batch that cannot fill."""
        if self.batched and self._in_flight > 1:
            # requests that arrive during a lone request's embedding enter the batcher together when
            # it is done, so they form one batch instead of one committed early that waits for the model
            await self._no_direct_call.wait()
            self.batched_calls += 1
            return await self.probabilities_batch(text)  # type: ignore[arg-type,return-value]  # @serve.batch: one item in, one out
        self.direct_calls += 1
        self._no_direct_call.clear()
        try:
            return (await RouterService.probabilities_batch(self, [text]))[0]
        finally:
            self._no_direct_call.set()

    async def route(self, text: str, options: RoutingOptions) -> RouteDecision:
        return (await self.route_embedded(text, options))[0]

    async def route_embedded(self, text: str, options: RoutingOptions) -> tuple[RouteDecision, Any]:
        """The decision and the text's embedding (None when the classifier uses none)."""
        self._ensure_started()
        router, snapshot = self.router, self.snapshot  # one consistent pair for this request
        self._in_flight += 1
        try:
            probs, timings, *rest = await self._probabilities(text)
        finally:
            self._in_flight -= 1
        t0 = time.perf_counter()
        quality = rest[1] if len(rest) > 1 else None
        if quality is not None:  # the artifact's quality head: per-query predicted quality and cost
            decision = router.decide(probs, snapshot, self.load, options, quality=quality)
        else:
            decision = router.decide(probs, snapshot, self.load, options)
        timings = {**decision.timings_ms, **timings}  # this batch's embed/classify, not the last one's
        timings.setdefault("policy", round((time.perf_counter() - t0) * 1000, 4))
        return dataclasses.replace(decision, timings_ms=timings), (rest[0] if rest else None)

    async def categories(self) -> list[str]:
        return list(getattr(self.router, "categories", ()))

    async def status(self) -> dict[str, Any]:
        self._ensure_started()
        return {
            "ready": self.router is not None,
            "router_version": getattr(self.router, "version", ""),
            "artifact": str(self.artifact),
            "revision": self.snapshot.revision,
            "swaps": self.swaps,
            "batched_calls": self.batched_calls,
            "direct_calls": self.direct_calls,
            "last_swap_error": self.last_swap_error,
        }

    async def aclose(self) -> None:
        await self._watcher.aclose()
        for task in (self._load_task, self._swap_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


class ServeRouter(RouterService):
    """The router as Ray Serve constructs it: expert load comes from the gateway's handle."""

    def __init__(self, settings: Settings, gateway_handle: Any) -> None:
        from registry import Registry

        async def load_source() -> Mapping[str, ExpertLoad]:
            return await gateway_handle.load.remote()

        super().__init__(settings, registry=Registry(settings.database_url), load_source=load_source)


def _timed_probabilities(router: Any, texts: list[str]) -> tuple[Any, dict[str, float], Any, Any]:
    """probabilities() plus its per-stage timings, embeddings and the quality head's per-query
    estimates (None without a head), read in the same thread right after the call."""
    t0 = time.perf_counter()
    probs = router.probabilities(texts)
    timings = dict(getattr(router, "last_timings_ms", None) or {})
    if not timings:
        timings = {"classify": round((time.perf_counter() - t0) * 1000 / max(len(texts), 1), 4)}
    emb = getattr(router, "last_embeddings", None)
    estimates = None
    if getattr(router, "quality", None) is not None:
        t1 = time.perf_counter()
        estimates = router.estimates(texts, emb)
        timings["quality"] = round((time.perf_counter() - t1) * 1000 / max(len(texts), 1), 4)
    return probs, timings, emb, estimates


def validate_artifact(path: Path, settings: Settings) -> str:
    """Load the artifact fully (as the service will) and return its version; ArtifactError otherwise."""
    if not path.is_dir():
        raise ArtifactError(f"router artifact {path} is not a directory")
    router = load_router(path, settings)
    return str(getattr(router, "version", ""))
