"""Graceful shutdown: drain the ingress replicas, then stop what `coe up` started.

In a replica (`Drain` + the `DrainGate` ASGI middleware around the ingress app):
- it counts the HTTP requests in flight, streams included (a streamed response is in flight until its
  last byte is sent);
- once draining, `/readyz` answers 503 `{"ready": false, "draining": true}` and every new request except
  `/healthz` and `/metrics` answers 503 `service_unavailable_error` / `shutting_down` with `retry-after`;
  requests already inside run to their end.

In the driver (`coe up`, `ShutdownSignals` + `drain_app`):
- the first SIGTERM or SIGINT starts the drain: every ingress replica is told to drain (readiness first),
  then the driver waits until each replica reports nothing in flight or `COE_SHUTDOWN_GRACE_S` passes,
  then Serve, Ray and the local expert server stop and `coe up` exits 0 with one line saying what drained;
- a second signal during that forces an immediate stop (Ray and the expert server are still killed,
  Serve's own drain is skipped) and `coe up` exits 128 + signal (130 for SIGINT, 143 for SIGTERM).

Serve replicas removed by a redeploy or a scale-down drain the same way through Serve itself: the
deployment options carry `graceful_shutdown_wait_loop_s` / `graceful_shutdown_timeout_s`
(deploy/serve/app.py::deployment_specs)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deploy.api.anthropic_messages import error_body as anthropic_error_body
from deploy.api.errors import coe_error_body
from router.errors import ShuttingDown

#: paths that stay open while draining (liveness and scraping); /readyz answers "draining"
_OPEN_PATHS = frozenset({"/healthz", "/metrics"})
# Probes and scrapes are not work: the drain neither counts nor waits for them (a load balancer's
# readiness poll at the signal is not "a request in flight").
_PROBES = _OPEN_PATHS | {"/readyz"}


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What the driver saw: replicas told to drain, requests in flight at the signal, whether all finished."""

    replicas: int
    in_flight_at_start: int
    drained: bool
    waited_s: float

    def line(self) -> str:
        state = "all finished" if self.drained else "grace period over, the rest were cut"
        return (
            f"drained {self.replicas} ingress replica(s): {self.in_flight_at_start} request(s) in flight "
            f"at the signal, {state} in {self.waited_s:.1f}s"
        )


class Drain:
    """A replica's drain state and its count of requests in flight (an ASGI middleware updates it)."""

    def __init__(self, *, retry_after_s: int = 5) -> None:
        self.draining = False
        self.in_flight = 0
        self.retry_after_s = retry_after_s
        self.refused = 0

    def begin(self) -> None:
        self.draining = True

    def state(self) -> dict[str, Any]:
        return {"draining": self.draining, "in_flight": self.in_flight, "refused": self.refused}

    async def wait_idle(self, timeout_s: float, poll_s: float = 0.05) -> bool:
        """True once nothing is in flight; False when `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True


def _refusal(drain: Drain, path: str) -> tuple[int, dict[str, Any]]:
    if path == "/readyz":
        return 503, {"ready": False, "draining": True}
    drain.refused += 1
    exc = ShuttingDown(
        "the service is shutting down; retry shortly or on another instance", code="shutting_down"
    )
    if path.startswith("/v1/messages"):  # Anthropic's clients read their own error shape
        return exc.status, anthropic_error_body(exc.status, exc.message)
    return exc.status, coe_error_body(exc)


class DrainGate:
    """Pure ASGI middleware: counts requests in flight; refuses new ones with 503 once draining."""

    def __init__(self, app: Any, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.drain.draining and path not in _OPEN_PATHS:
            status, body = _refusal(self.drain, path)
            data = json.dumps(body).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode()),
                        (b"retry-after", str(self.drain.retry_after_s).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})
            return
        if path in _PROBES:
            await self.app(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


def replica_id(owner: object) -> str:
    """This Serve replica's id (an object id outside Serve, e.g. in tests)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return f"local-{id(owner):x}"


# ----- the driver side ------------------------------------------------------------------------------


class ShutdownRequested(BaseException):  # noqa: N818 - a control-flow signal, like KeyboardInterrupt
    """The first SIGTERM/SIGINT: drain, then stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class ForcedShutdown(BaseException):  # noqa: N818
    """A second signal: stop now."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class ShutdownSignals:
    """SIGTERM and SIGINT handlers for the driver's main thread. The first signal raises ShutdownRequested
    when `armed` (the serving loop: it interrupts a sleep), and is only recorded otherwise (start-up:
    raising inside ray.init's C code turns into a SystemError), to be raised by `checkpoint()`; any later
    signal raises ForcedShutdown at once. `install()` again after `ray.init`, which puts in its own SIGTERM
    handler (it calls sys.exit inside whatever was running)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: list[int] = []
        self.armed = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            if self.armed:
                raise ShutdownRequested(signum)
            return
        if len(self.received) == 2:
            raise ForcedShutdown(signum)
        # later ones: the forced stop is already under way

    def checkpoint(self) -> None:
        """Raise ShutdownRequested when a first signal came while not armed."""
        if len(self.received) == 1:
            raise ShutdownRequested(self.received[0])

    def install(self) -> None:
        for s in self.SIGNALS:
            old = signal.signal(s, self._handle)
            self._old.setdefault(s, old)

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def _running_replicas(app_name: str, deployment: str) -> int:
    from ray import serve

    try:
        states = serve.status().applications[app_name].deployments[deployment].replica_states
        running = sum(n for state, n in states.items() if str(getattr(state, "value", state)) == "RUNNING")
        return max(1, int(running))
    except Exception:
        return 1


def drain_app(
    app_name: str,
    grace_s: float,
    *,
    deployment: str = "CoeIngress",
    poll_s: float = 0.2,
    say: Callable[[str], None] = lambda _m: None,
) -> DrainReport:
    """Tell every replica of `deployment` to drain and wait until each one has nothing in flight (or
    `grace_s` passed). Serve routes each handle call to one replica, so calls repeat until every running
    replica has answered (in bursts, bounded); a replica that never answers is left to Serve's own
    graceful stop."""
    from ray import serve

    t0 = time.monotonic()
    deadline = t0 + grace_s
    handle = serve.get_deployment_handle(deployment, app_name)
    replicas = _running_replicas(app_name, deployment)
    at_start: dict[str, int] = {}
    for _ in range(4):
        # calls sent together: Serve's router counts the calls it has assigned to each replica and sends
        # the next to a less busy one, so a burst reaches every replica (one call at a time always goes
        # to the replica with fewer requests in flight, the same one while the load does not change)
        calls = [handle.begin_drain.remote() for _ in range(4 * replicas)]
        for call in calls:
            state = call.result(timeout_s=10)
            at_start.setdefault(state["replica"], state["in_flight"])
        if len(at_start) >= replicas:
            break
    say(f"draining: {sum(at_start.values())} request(s) in flight; new requests get 503 (grace {grace_s:g}s)")
    busy = {r: n for r, n in at_start.items() if n > 0}
    while busy and time.monotonic() < deadline:
        time.sleep(poll_s)
        state = handle.drain_state.remote().result(timeout_s=10)
        busy[state["replica"]] = state["in_flight"]
        busy = {r: n for r, n in busy.items() if n > 0}
    return DrainReport(len(at_start), sum(at_start.values()), not busy, time.monotonic() - t0)
