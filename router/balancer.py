"""Auxiliary-loss-free load balancing (as in DeepSeek-V3's MoE router): each expert carries a bias
b_e that `update(load)` nudges down by γ while the expert's load is above the mean of the usable experts
and up by γ while below. Policies rank experts by score + bias but report the unbiased score; |b| is
clipped to `max_bias`, so the bias only reorders experts whose predicted quality is nearly equal."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from router.types import ExpertLoad


def load_figure(load: ExpertLoad) -> float:
    """The load the balancer equalises: requests in flight, plus recent starts as a tie-breaker."""
    return float(load.in_flight) + float(load.recent_requests)


class LoadBias:
    def __init__(self, gamma: float = 0.005, max_bias: float = 0.03) -> None:
        if gamma < 0 or max_bias < 0:
            raise ValueError("gamma and max_bias must be non-negative")
        self.gamma = gamma
        self.max_bias = max_bias
        self._bias: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, load: Mapping[str, ExpertLoad]) -> dict[str, float]:
        """One balancing step over the healthy experts in `load`; returns the new biases."""
        usable = {n: load_figure(v) for n, v in load.items() if v.healthy}
        with self._lock:
            if usable:
                mean = sum(usable.values()) / len(usable)
                for name, value in usable.items():
                    b = self._bias.get(name, 0.0)
                    if value > mean:
                        b -= self.gamma
                    elif value < mean:
                        b += self.gamma
                    self._bias[name] = max(-self.max_bias, min(self.max_bias, b))
            return dict(self._bias)

    def bias(self, expert: str) -> float:
        return self._bias.get(expert, 0.0)

    def biases(self) -> dict[str, float]:
        with self._lock:
            return dict(self._bias)

    def reset(self) -> None:
        with self._lock:
            self._bias.clear()
