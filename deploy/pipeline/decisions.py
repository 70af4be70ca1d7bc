"""The decision log's writer and `POST /v1/feedback`.

Every completion's decision goes into a bounded in-memory queue (`submit` never blocks and never touches
the database); one background thread writes what has queued up in batches (at most every `linger_s`)
and, about once an hour, prunes rows older than `COE_DECISION_RETENTION_DAYS` or beyond
`COE_DECISION_MAX_ROWS`. When the queue is full (the database is slow or down) new decisions are dropped
and counted (`coe_decisions_dropped`): the request path is never slowed by the log.

Feedback names a completion id; when that completion is still queued in this replica the handler waits
(briefly) for the writer before it looks the id up, so an immediate feedback is not a false 404. With
several ingress replicas the feedback may reach a replica other than the one that answered, whose
writer has not written the decision yet: an id that is not found is looked up again for up to
`SETTLE_S` (longer than a writer's linger and one batch write) before the 404, so an unknown id's 404
comes that much later."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from registry.records import DecisionRecord, FeedbackRecord
from router.errors import NotFound

log = logging.getLogger("coe.decisions")

PRUNE_EVERY_S = 3600.0
SETTLE_S = 1.5  # how long an unknown completion id may still be in another replica's queue


class DecisionStore(Protocol):
    def write_decisions(self, records: Sequence[DecisionRecord]) -> int: ...

    def prune_decisions(self, *, retention_days: float | None, max_rows: int | None) -> int: ...


class FeedbackStore(Protocol):
    def add_feedback(
        self, *, decision_id: str, score: Any, comment: str = "", key_id: str | None = None
    ) -> FeedbackRecord: ...


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    comment: str | None = Field(default=None, max_length=4000)


class DecisionLog:
    def __init__(
        self,
        store: DecisionStore,
        *,
        max_queue: int = 10_000,
        batch: int = 200,
        linger_s: float = 0.1,
        retention_days: float | None = None,
        max_rows: int | None = None,
        on_drop: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._queue: queue.Queue[DecisionRecord] = queue.Queue(maxsize=max(1, max_queue))
        self._batch = max(1, batch)
        self._linger_s = linger_s
        self._retention = retention_days or None
        self._max_rows = max_rows or None
        self._on_drop = on_drop
        self._clock = clock
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_prune: float | None = None
        self.dropped = 0
        self.written = 0

    def submit(self, record: DecisionRecord) -> bool:
        """Queue one decision; False (and counted) when the queue is full."""
        with self._lock:
            self._pending.add(record.id)  # before the put: the writer may take it at once
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._pending.discard(record.id)
                self.dropped += 1
                self._on_drop()
                return False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="coe-decisions", daemon=True)
            self._thread.start()
        return True

    def pending(self, completion_id: str) -> bool:
        return completion_id in self._pending

    def wait_written(self, completion_id: str, timeout_s: float) -> bool:
        """Block until `completion_id` left the queue (written or dropped); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: completion_id not in self._pending, timeout=timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            # linger so a busy replica writes a batch a few times a second, not a row per request
            # (each wake-up of this thread takes the GIL from the event loop)
            self._stop.wait(self._linger_s)
            batch = [first]
            while len(batch) < self._batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)
            self._maybe_prune()

    def _write(self, batch: list[DecisionRecord]) -> None:
        for attempt in range(3):
            try:
                self.written += self._store.write_decisions(batch)
                break
            except Exception as exc:
                log.warning("decision log write failed (%s: %s)", type(exc).__name__, exc)
                if self._stop.wait(0.2 * (attempt + 1)):
                    break
        else:
            self.dropped += len(batch)
        with self._idle:
            self._pending.difference_update(r.id for r in batch)
            self._idle.notify_all()

    def _maybe_prune(self) -> None:
        if self._retention is None and self._max_rows is None:
            return
        now = self._clock()
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        try:
            self._store.prune_decisions(retention_days=self._retention, max_rows=self._max_rows)
        except Exception as exc:
            log.warning("decision log prune failed (%s: %s)", type(exc).__name__, exc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (up to `timeout_s`), then stop the thread."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            self._idle.wait_for(lambda: not self._pending, timeout=max(0.0, deadline - time.monotonic()))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))


async def store_feedback(
    store: FeedbackStore,
    decisions: DecisionLog | None,
    data: Any,
    key_id: str | None,
    *,
    settle_s: float = SETTLE_S,
) -> dict[str, Any]:
    """Validate and store one feedback; NotFound (404) for a completion id still unknown after
    `settle_s` (another replica may not have written it yet)."""
    body = FeedbackBody.model_validate(data)
    if decisions is not None and decisions.pending(body.id):
        await asyncio.to_thread(decisions.wait_written, body.id, 2.0)
    deadline = time.monotonic() + settle_s
    delay = 0.05
    while True:
        try:
            rec = await asyncio.to_thread(
                store.add_feedback,
                decision_id=body.id,
                score=body.score,
                comment=body.comment or "",
                key_id=key_id,
            )
        except NotFound:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.4)
            continue
        return {"object": "coe.feedback", "id": rec.decision_id, "score": rec.score, "comment": rec.comment}
