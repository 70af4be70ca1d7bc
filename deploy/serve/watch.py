"""Hot reload: poll the registry's revision and hand each new snapshot to a callback.

Every deployment owns one watcher. The swap itself is one attribute assignment in the owner, so
a request sees either the old snapshot or the new one, never a mix; in-flight requests finish
on the snapshot they started with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from router.types import RegistrySnapshot

log = logging.getLogger("coe.reload")


class RevisionSource(Protocol):
    def revision(self) -> int: ...

    def snapshot(self) -> RegistrySnapshot: ...


class SnapshotWatcher:
    def __init__(
        self,
        registry: RevisionSource,
        on_change: Callable[[RegistrySnapshot], Awaitable[Any] | Any],
        *,
        interval_s: float,
        revision: int = -1,
        name: str = "",
        first_wait_s: float = 2.0,
    ) -> None:
        self._registry = registry
        self._on_change = on_change
        self._interval = max(0.05, interval_s)
        self.revision = revision
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._polled = asyncio.Event()  # set once the first poll was made (applied, unchanged or failed)
        self._first_wait = first_wait_s
        self.errors = 0

    async def start(self) -> None:
        """Start polling (idempotent), and until the first poll was made wait for it (at most
        `first_wait_s`): the owner was built with the snapshot of that moment, which may be old by its
        first request (an expert added or removed since). A registry that does not answer in time
        leaves the old snapshot, as a failed poll does later."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"coe-watch-{self._name}")
        if not self._polled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._polled.wait(), self._first_wait)

    async def poll_once(self) -> bool:
        """Check the revision once; load and apply a new snapshot when it moved. True when applied."""
        revision = await asyncio.to_thread(self._registry.revision)
        if revision == self.revision:
            return False
        snapshot = await asyncio.to_thread(self._registry.snapshot)
        result = self._on_change(snapshot)
        if asyncio.iscoroutine(result):
            await result
        self.revision = snapshot.revision
        log.info("%s: registry revision %s applied", self._name or "watcher", snapshot.revision)
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a DB hiccup must not kill the watcher; keep serving the old snapshot
                self.errors += 1
                log.warning("%s: registry poll failed: %s", self._name or "watcher", exc)
            self._polled.set()
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
