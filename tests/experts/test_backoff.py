"""Retry backoff (experts/attempt.py::backoff_delay): exponential with jitter over the upper half of each
step, so that callers whose tries failed at the same moment spread their retries."""

from __future__ import annotations

import random

import pytest

from experts.attempt import backoff_delay


@pytest.mark.parametrize("retry", [0, 1, 2, 5])
def test_the_delay_stays_in_the_upper_half_of_its_exponential_step(retry: int) -> None:
    ceiling = 0.2 * 2**retry
    assert backoff_delay(0.2, retry, draw=lambda: 0.0) == pytest.approx(ceiling / 2)
    assert backoff_delay(0.2, retry, draw=lambda: 1.0) == pytest.approx(ceiling)
    rng = random.Random(retry)
    delays = [backoff_delay(0.2, retry, draw=rng.random) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_simultaneous_failures_do_not_retry_in_step() -> None:
    rng = random.Random(29)
    delays = [backoff_delay(0.5, 1, draw=rng.random) for _ in range(50)]
    assert len({round(d, 6) for d in delays}) > 40  # spread, not one shared instant
    assert max(delays) - min(delays) > 0.25  # over most of [0.5, 1.0]


def test_the_default_draw_is_random() -> None:
    assert len({backoff_delay(1.0, 0) for _ in range(20)}) > 1
