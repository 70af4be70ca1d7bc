"""A per-expert circuit breaker.

closed ──N consecutive failures──▶ open ──cooldown elapsed──▶ half-open (one probe)
  ▲                                 ▲                              │
  └──────────── probe succeeds ─────┼──────────────────────────────┤
                                    └──────── probe fails ─────────┘
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, failures: int = 3, cooldown_s: float = 15.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = max(1, failures)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: State = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_out = False

    @property
    def state(self) -> State:
        """Current state; an open breaker whose cooldown has elapsed reads as half-open."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = "half_open"
            self._probe_out = False
        return self._state

    @property
    def available(self) -> bool:
        """Whether `allow()` would let a call through now (does not take the probe)."""
        s = self.state
        return s == "closed" or (s == "half_open" and not self._probe_out)

    def allow(self) -> bool:
        """Ask to make a call. In half-open state only the first caller (the probe) is let through."""
        s = self.state
        if s == "closed":
            return True
        if s == "half_open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self) -> None:
        self._state = "closed"
        self._consecutive = 0
        self._probe_out = False

    def record_failure(self) -> None:
        s = self.state
        if s == "half_open":
            self._open()
            return
        self._consecutive += 1
        if s == "closed" and self._consecutive >= self.failures:
            self._open()

    def release(self) -> None:
        """Give back a probe that ended without a verdict (cancelled, or a caller-side error)."""
        self._probe_out = False

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._probe_out = False
        self._consecutive = 0
