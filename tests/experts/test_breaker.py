from __future__ import annotations

from experts.breaker import CircuitBreaker


def test_closed_open_half_open_closed(clock):
    b = CircuitBreaker(failures=3, cooldown_s=15, clock=clock)
    assert b.state == "closed" and b.allow()
    b.record_failure()
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open" and not b.allow() and not b.available
    clock.advance(14.9)
    assert b.state == "open"
    clock.advance(0.2)
    assert b.state == "half_open" and b.available
    assert b.allow()  # the single probe
    assert not b.allow() and not b.available
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_probe_failure_reopens_and_success_resets_count(clock):
    b = CircuitBreaker(failures=2, cooldown_s=5, clock=clock)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"  # the success reset the consecutive count
    b.record_failure()
    assert b.state == "open"
    clock.advance(5)
    assert b.allow()
    b.record_failure()
    assert b.state == "open"
    clock.advance(4)
    assert not b.allow()
    clock.advance(1)
    assert b.allow()


def test_release_returns_the_probe(clock):
    b = CircuitBreaker(failures=1, cooldown_s=1, clock=clock)
    b.record_failure()
    clock.advance(1)
    assert b.allow() and not b.allow()
    b.release()
    assert b.allow()
