"""SnapshotWatcher (deploy/serve/watch.py): the first use of a replica waits for one poll, so that it is
not answered on the snapshot its owner was built with; a registry that is down or slow does not hold it."""

from __future__ import annotations

import asyncio
import threading

from deploy.serve.watch import SnapshotWatcher
from router.types import RegistrySnapshot
from tests.deploy.doubles import FakeRegistry


def _watcher(reg: FakeRegistry, applied: list[RegistrySnapshot], **kw: float) -> SnapshotWatcher:
    return SnapshotWatcher(reg, applied.append, interval_s=60, revision=reg.snap.revision, **kw)


async def test_start_applies_a_change_made_since_the_owner_was_built() -> None:
    reg, applied = FakeRegistry(), []
    watcher = _watcher(reg, applied)
    reg.bump(disabled=("math",))
    await watcher.start()  # the poll interval is a minute: only the first poll can have applied it
    assert [s.revision for s in applied] == [reg.snap.revision] and watcher.revision == reg.snap.revision
    await watcher.start()  # later calls do not poll again
    assert len(applied) == 1
    await watcher.aclose()


async def test_start_does_not_wait_on_a_registry_that_is_down() -> None:
    reg, applied = FakeRegistry(), []
    reg.fail = True
    watcher = _watcher(reg, applied)
    await watcher.start()  # the failed poll counts as the first: the old snapshot serves
    assert applied == [] and watcher.errors == 1
    await watcher.aclose()


async def test_start_waits_at_most_first_wait_on_a_slow_registry() -> None:
    reg, applied = FakeRegistry(), []
    release = threading.Event()

    def slow_revision() -> int:
        release.wait(30)
        return reg.snap.revision

    reg.revision = slow_revision  # type: ignore[method-assign]
    watcher = _watcher(reg, applied, first_wait_s=0.2)
    reg.bump()
    await watcher.start()
    assert applied == []  # it stopped waiting: the poll is still held by the registry
    release.set()
    for _ in range(200):  # the poll goes on in the background and applies the change
        if applied:
            break
        await asyncio.sleep(0.05)
    assert [s.revision for s in applied] == [reg.snap.revision]
    await watcher.aclose()
