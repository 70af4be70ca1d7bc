"""The router deployment as a plain class: embed + classify (batched continuously), then decide.

`probabilities_batch(texts)` embeds and classifies a batch in a worker thread. With `batched = True`
(the app builder sets it) every request's text goes through an `EmbedBatcher`: one batch runs at a time,
and the requests that arrive while it runs form the next one, up to `batch_max_size`. No timer: a
request on an idle replica starts a batch at once (of itself, plus whatever arrived in the same
event-loop turn), and under load the batch size grows with the queue. So concurrent requests on one
replica share embedding calls with no added wait (`coe_route_batch_size` counts the sizes they got).
Constructed directly (unbatched) in tests.

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


def embedder_threads(settings: Settings) -> int:
    """The embedder's threads in a service replica: `torch_threads`, or when 0 the CPUs the replica
    reserves for routing (`router_cpus`, at least 1). Ray places replicas by their reserved CPUs, so more
    threads than that oversubscribe the cores other replicas were given; on the 2-core test machine one
    thread gave `auto` 1.7x the throughput at concurrency 16 of two threads (BENCHMARKS.md §10)."""
    return settings.torch_threads or max(1, int(settings.router_cpus))


def load_router(artifact: str | Path, settings: Settings) -> Any:
    from router.core import Router

    return Router.load(
        artifact,
        embedder_model=settings.embedder_model,
        threads=embedder_threads(settings),
        backend=settings.embedder_backend,
        cache_dir=settings.data_dir,
    )


def artifact_from_registry(registry: RegistryReader, default: Path) -> Path:
    """The artifact the registry names (`coe router deploy`), else the settings default."""
    getter = getattr(registry, "get_setting", None)
    value = getter(ARTIFACT_SETTING) if getter is not None else None
    return Path(value) if value else Path(default)


class EmbedBatcher:
    """Continuous batching of one async batch function: `submit(item)` queues the item and answers its
    own result; one batch runs at a time, taking up to `max_size` queued items. An exception in a batch
    goes to each of its callers."""

    def __init__(self, run: Callable[[list[str]], Awaitable[list[Any]]], max_size: int) -> None:
        self._run = run
        self.max_size = max(1, max_size)
        self._queue: list[tuple[str, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: str) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # the requests that arrived in this event-loop turn join the first batch
        while self._queue:
            batch, self._queue = self._queue[: self.max_size], self._queue[self.max_size :]
            live = [(item, f) for item, f in batch if not f.cancelled()]
            if not live:
                continue
            self.batches += 1
            self.items += len(live)
            try:
                results = await self._run([item for item, _ in live])
            except Exception as exc:
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), result in zip(live, results, strict=True):
                if not f.done():
                    f.set_result(result)


class RouterService:
    batched: bool = False  # set by the app builder: concurrent requests share embedding batches

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
        self.batcher = EmbedBatcher(lambda texts: self.probabilities_batch(texts), settings.batch_max_size)

    # ----- background ---------------------------------------------------------------------------
    async def _ensure_started(self) -> None:
        await self._watcher.start()
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
    async def probabilities_batch(self, texts: list[str]) -> list[tuple[Any, ...]]:
        """Embed + classify a batch in a worker thread (the event loop keeps accepting requests):
        per text, (probabilities, timings, embedding or None, quality estimate or None, the reading that
        gave the probabilities: router.core.READINGS)."""
        probs, timings, emb, est, readings = await asyncio.to_thread(
            _timed_probabilities, self.router, list(texts)
        )
        timings["batch_size"] = float(len(texts))
        return [
            (
                probs[i],
                dict(timings),
                None if emb is None else emb[i],
                None if est is None else est[i],
                readings[i] if i < len(readings) else None,
            )
            for i in range(len(texts))
        ]

    async def _probabilities(self, text: str) -> tuple[Any, ...]:
        if self.batched:
            return tuple(await self.batcher.submit(text))
        return (await self.probabilities_batch([text]))[0]

    async def route(self, text: str, options: RoutingOptions) -> RouteDecision:
        return (await self.route_embedded(text, options))[0]

    async def route_embedded(self, text: str, options: RoutingOptions) -> tuple[RouteDecision, Any]:
        """The decision and the text's embedding (None when the classifier uses none)."""
        await self._ensure_started()
        router, snapshot = self.router, self.snapshot  # one consistent pair for this request
        probs, timings, *rest = await self._probabilities(text)
        t0 = time.perf_counter()
        quality = rest[1] if len(rest) > 1 else None
        # the reading that gave the probabilities (instruction, pasted code, both): the decision names it
        extra: dict[str, Any] = {"reading": rest[2]} if len(rest) > 2 and rest[2] is not None else {}
        if quality is not None:  # the artifact's quality head: per-query predicted quality and cost
            decision = router.decide(probs, snapshot, self.load, options, quality=quality, **extra)
        else:
            decision = router.decide(probs, snapshot, self.load, options, **extra)
        timings = {**decision.timings_ms, **timings}  # this batch's embed/classify, not the last one's
        timings.setdefault("policy", round((time.perf_counter() - t0) * 1000, 4))
        return dataclasses.replace(decision, timings_ms=timings), (rest[0] if rest else None)

    async def categories(self) -> list[str]:
        return list(getattr(self.router, "categories", ()))

    async def status(self) -> dict[str, Any]:
        await self._ensure_started()
        return {
            "ready": self.router is not None,
            "router_version": getattr(self.router, "version", ""),
            "artifact": str(self.artifact),
            "revision": self.snapshot.revision,
            "swaps": self.swaps,
            "batches": self.batcher.batches,
            "batched_texts": self.batcher.items,
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


def _timed_probabilities(router: Any, texts: list[str]) -> tuple[Any, dict[str, float], Any, Any, list[str]]:
    """probabilities() plus its per-stage timings, embeddings, the quality head's per-query estimates
    (None without a head) and each text's reading, read in the same thread right after the call."""
    t0 = time.perf_counter()
    probs = router.probabilities(texts)
    readings = list(getattr(router, "last_readings", None) or ())
    timings = dict(getattr(router, "last_timings_ms", None) or {})
    if not timings:
        timings = {"classify": round((time.perf_counter() - t0) * 1000 / max(len(texts), 1), 4)}
    emb = getattr(router, "last_embeddings", None)
    estimates = None
    if getattr(router, "quality", None) is not None:
        t1 = time.perf_counter()
        estimates = router.estimates(texts, emb)
        timings["quality"] = round((time.perf_counter() - t1) * 1000 / max(len(texts), 1), 4)
    return probs, timings, emb, estimates, readings


def validate_artifact(path: Path, settings: Settings) -> str:
    """Load the artifact fully (as the service will) and return its version; ArtifactError otherwise."""
    if not path.is_dir():
        raise ArtifactError(f"router artifact {path} is not a directory")
    router = load_router(path, settings)
    return str(getattr(router, "version", ""))
