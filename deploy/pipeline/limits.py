"""Per-key limits and budgets, enforced in each ingress replica without a database call on the request path.

- **rpm / tpm**: a sliding one-minute window per key in this replica, allowing `ceil(limit / R)` where R is
  `COE_LIMITS_REPLICAS` (0 = the ingress replica count). What holds: with R replicas the service admits at
  most `R · ceil(limit / R)` requests (tokens) per minute, whatever the spread; a client whose requests all
  land on one replica is held to `ceil(limit / R)`. tpm counts the tokens of finished requests, so a request
  that starts under the limit may take the window over it by its own size.
- **budget**: the registry database is the source of truth. Each replica adds its usage to
  `key_usage` in batches every `COE_USAGE_FLUSH_S` seconds (a background thread) and re-reads every key's
  limits and current-period spend then. A request is refused when the spend known here (the database's
  figure at the last sync plus this replica's unflushed usage) reaches the budget. What holds: the
  overspend is at most what the other replicas spent in one flush interval plus the requests in flight.

Refusals: 429 `rate_limit_exceeded` with `retry-after` (rpm/tpm), 429 `insufficient_quota` (budget)."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from experts.types import Usage
from registry.records import KeyLimits, KeyUsageRecord, UsageDelta
from registry.usage import period_start
from router.errors import QuotaExceeded, RateLimited

log = logging.getLogger("coe.limits")

WINDOW_S = 60.0


class UsageStore(Protocol):
    def key_limits(self) -> Mapping[str, KeyLimits]: ...

    def current_usage(self, now: datetime | None = None) -> Mapping[str, KeyUsageRecord]: ...

    def add_usage(self, deltas: Sequence[UsageDelta]) -> int: ...


class _Window:
    """Events (time, amount) of the last minute."""

    __slots__ = ("events", "total")

    def __init__(self) -> None:
        self.events: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def trim(self, now: float) -> None:
        while self.events and now - self.events[0][0] >= WINDOW_S:
            self.total -= self.events.popleft()[1]

    def add(self, now: float, amount: float) -> None:
        self.events.append((now, amount))
        self.total += amount

    def retry_after(self, now: float, limit: float) -> float:
        """Seconds until the window holds less than `limit` again."""
        total = self.total
        for t, amount in self.events:
            total -= amount
            if total < limit:
                return max(0.0, WINDOW_S - (now - t))
        return WINDOW_S


class KeyLimiter:
    def __init__(
        self,
        store: UsageStore,
        *,
        replicas: int = 1,
        flush_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._replicas = max(1, replicas)
        self._flush_s = flush_s
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._limits: dict[str, KeyLimits] = {}
        self._spent: dict[tuple[str, str], float] = {}  # (key, period) -> USD in the database at last sync
        self._pending: dict[tuple[str, str], list[float]] = {}  # (key, period) -> [req, pt, ct, usd]
        self._requests: dict[str, _Window] = {}
        self._tokens: dict[str, _Window] = {}
        self._loaded = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ----- request path (memory only) -----------------------------------------------------------
    def local_limit(self, limit: int) -> int:
        return max(1, math.ceil(limit / self._replicas))

    async def admit(self, key_id: str | None) -> None:
        """Raise RateLimited / QuotaExceeded, or count the request and return."""
        if key_id is None:
            return
        if not self._loaded:
            await asyncio.to_thread(self.sync)  # once per replica: limits before the first request
        self._ensure_thread()
        self.check(key_id)

    def _check_rate(
        self, windows: dict[str, _Window], key_id: str, per_minute: int, what: str, now: float
    ) -> _Window:
        """The key's window of `what` (tokens or requests), trimmed to the last minute; RateLimited
        when this replica's share of `per_minute` is used up."""
        w = windows.setdefault(key_id, _Window())
        w.trim(now)
        local = self.local_limit(per_minute)
        if w.total >= local:
            raise RateLimited(
                f"rate limit of {per_minute} {what} per minute reached for API key {key_id}",
                code="rate_limit_exceeded",
                retry_after_s=w.retry_after(now, local),
            )
        return w

    def check(self, key_id: str) -> None:
        lim = self._limits.get(key_id)
        if lim is None:
            return
        now = self._clock()
        with self._lock:
            if lim.budget_usd is not None:
                spent = self.spent(key_id)
                if spent >= lim.budget_usd:
                    raise QuotaExceeded(
                        f"API key {key_id} has spent its {lim.budget_period} budget of "
                        f"${lim.budget_usd:g} (${spent:.6f} used)",
                        code="insufficient_quota",
                    )
            if lim.tpm is not None:
                self._check_rate(self._tokens, key_id, lim.tpm, "tokens", now)
            if lim.rpm is not None:
                self._check_rate(self._requests, key_id, lim.rpm, "requests", now).add(now, 1.0)

    def _period(self, key_id: str) -> str:
        lim = self._limits.get(key_id)
        return period_start(lim.budget_period if lim else "month", self._wall())

    def spent(self, key_id: str) -> float:
        """USD spent by the key in its current period, as far as this replica knows."""
        p = (key_id, self._period(key_id))
        return self._spent.get(p, 0.0) + (self._pending.get(p) or [0, 0, 0, 0.0])[3]

    def record(self, key_id: str | None, usage: Usage, cost_usd: float) -> None:
        """A finished request's usage: into the tpm window and the next batch for the database."""
        if key_id is None:
            return
        with self._lock:
            acc = self._pending.setdefault((key_id, self._period(key_id)), [0, 0, 0, 0.0])
            acc[0] += 1
            acc[1] += usage.prompt_tokens
            acc[2] += usage.completion_tokens
            acc[3] += float(cost_usd or 0.0)
            if key_id in self._limits and self._limits[key_id].tpm is not None:
                self._tokens.setdefault(key_id, _Window()).add(self._clock(), float(usage.total_tokens))

    # ----- off the request path -----------------------------------------------------------------
    def sync(self) -> None:
        """Write the pending usage in one batch, then re-read limits and spend (blocking: a thread)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        deltas = [
            UsageDelta(k, p, int(v[0]), int(v[1]), int(v[2]), float(v[3])) for (k, p), v in batch.items()
        ]
        try:
            if deltas:
                self._store.add_usage(deltas)
            limits = dict(self._store.key_limits())
            usage = self._store.current_usage(self._wall())
        except Exception:
            with self._lock:  # keep the batch for the next try
                for (k, p), v in batch.items():
                    acc = self._pending.setdefault((k, p), [0, 0, 0, 0.0])
                    for i in range(4):
                        acc[i] += v[i]
            raise
        with self._lock:
            self._limits = limits
            self._spent = {(u.key_id, u.period_start): u.cost_usd for u in usage.values()}
            self._loaded = True

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="coe-usage", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._flush_s):
            try:
                self.sync()
            except Exception as exc:
                log.warning("usage sync failed (%s: %s); retrying", type(exc).__name__, exc)

    def close(self) -> None:
        """Stop the thread and write what is pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.sync()
        except Exception as exc:
            log.warning("usage sync at close failed: %s", exc)
