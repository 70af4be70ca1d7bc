"""Autoscaling, bounded: a two-node local Ray cluster (head + worker, 2 CPUs each, loopback), `coe up` with
COE_AUTOSCALE=true and short autoscaler timing, the real router artifact and a real stub expert
(tests/deploy/replicas_stack.py). Clients send `model=auto` requests without retries: at high
concurrency the CoeIngress replicas scale up, back at concurrency 1 they scale down to one, and not one
request fails on the way. The measured ramp (p50/p99 per step) is bench/scaling_ramp.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.replicas_stack import TwoNodes, front_door, start_two_nodes

pytestmark = [pytest.mark.serve, pytest.mark.slow]

HIGH = 40  # clients at the top of the ramp: 2.5x the one-hop target of 16 ongoing requests per replica


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TwoNodes]:
    c = start_two_nodes(
        tmp_path,
        COE_AUTOSCALE="true",
        COE_AUTOSCALE_MAX_REPLICAS="3",
        COE_AUTOSCALE_UPSCALE_DELAY_S="3",
        COE_AUTOSCALE_DOWNSCALE_DELAY_S="10",
        COE_AUTOSCALE_LOOK_BACK_S="12",
    )
    try:
        yield c
    finally:
        c.stop()


class Clients:
    """`n` threads sending until told to stop (each at most 3000 requests): every outcome counted."""

    def __init__(self, cluster: TwoNodes) -> None:
        self.cluster = cluster
        self.ok = 0
        self.failures: list[str] = []
        self.stops: list[threading.Event] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def _run(self, i: int, stop: threading.Event) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": f"Client {i}: what is {i}*7?"}]}
        with httpx.Client(base_url=self.cluster.base, headers=self.cluster.auth(), timeout=120) as c:
            for _ in range(3000):
                if stop.is_set():
                    return
                try:
                    r = c.post("/v1/chat/completions", json=body)
                    failure = None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    if failure is None:
                        self.ok += 1
                    else:
                        self.failures.append(failure)

    def resize(self, n: int) -> None:
        while len(self.threads) > n:
            self.stops.pop().set()
            self.threads.pop().join(120)
        while len(self.threads) < n:
            stop = threading.Event()
            t = threading.Thread(target=self._run, args=(len(self.threads), stop), daemon=True)
            self.stops.append(stop)
            self.threads.append(t)
            t.start()


def _until(cond: object, timeout_s: float, clients: Clients, what: str, cluster: TwoNodes) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert not clients.failures, clients.failures[:5]
        assert time.monotonic() < deadline, f"{what}: replicas {cluster.replicas()}\n{cluster.log()[-2000:]}"
        time.sleep(1.0)


def test_ramp_scales_up_and_down_without_a_failed_request(cluster: TwoNodes) -> None:
    # the default front door (COE_SERVE_INGRESS=haproxy) follows the replicas Serve starts and stops
    assert front_door(int(cluster.base.rsplit(":", 1)[1])) == "haproxy"
    clients = Clients(cluster)
    try:
        clients.resize(1)
        _until(lambda: clients.ok >= 5, 120, clients, "first answers", cluster)
        assert sum(cluster.replicas()) == 1
        clients.resize(HIGH)
        _until(lambda: sum(cluster.replicas()) >= 2, 240, clients, "scale-up", cluster)
        served_up = clients.ok
        _until(lambda: clients.ok >= served_up + 50, 120, clients, "answers while scaled up", cluster)
        clients.resize(1)
        _until(lambda: sum(cluster.replicas()) == 1, 240, clients, "scale-down", cluster)
        at_one = clients.ok
        _until(lambda: clients.ok >= at_one + 5, 60, clients, "answers after scale-down", cluster)
    finally:
        clients.resize(0)
    assert clients.failures == [], clients.failures[:5]
    assert "Traceback" not in cluster.log()
