"""Prometheus metrics of the service (`GET /metrics`, `/admin/v1/status`, `coe status`, the dashboard).

Each Metrics object counts what its own ingress replica does in its own CollectorRegistry (`local`), so
tests and several app instances never clash on global names. With several ingress replicas the figures
that are served are the whole service's: every replica exchanges its cumulative samples with the app's
`CoeMetricsHub` deployment (`MetricsHub`, one replica, no CPU) every `COE_METRICS_PUSH_S` seconds and
right before it answers a scrape or a status request, and renders its own live samples plus every other
replica's latest ones, summed by series. So a scrape through the Serve proxy, whichever replica answers,
reports every replica's requests, expert calls, errors, tokens, cost, latency histograms and cache
look-ups; another replica's figures are at most one push interval old.

- Counters and histograms are cumulative per replica and summed over all replicas the hub has heard from,
  including replicas that have stopped since (scale-down, redeploy): the service's totals never go down
  while the hub lives. A hub restart forgets stopped replicas; live ones re-send their totals.
- Gauges (`coe_requests_in_flight`) are summed over replicas heard from in the last `STALE_S` seconds;
  `coe_registry_revision` is the highest one.
- `coe_metrics_replicas` says how many live replicas the figures include.
- Without a hub (tests, a plain ASGI server) the figures are this process's.

Per replica, and said so in the status document: expert health, breaker, in-flight and latency-window
figures (each replica runs its own ExpertPool)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from deploy.pipeline.ray_export import RayExport
from experts.types import ChatResult, Usage
from router.types import RouteDecision

log = logging.getLogger("coe.metrics")

STAGES = ("embed", "classify", "policy", "expert", "total")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STALE_S = 15.0  # a replica not heard from for this long no longer counts in gauges
HEARTBEAT_S = 5.0  # unchanged figures are re-sent this often (a restarted hub learns them again)
_MAX_GAUGES = {"coe_registry_revision"}  # gauges the service reports as the highest replica's value

# One replica's cumulative figures: (family, help, type, ((sample, ((label, value), ...), value), ...)).
Family = tuple[str, str, str, tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]]
Snapshot = tuple[Family, ...]
Exchange = Callable[[str, Snapshot | None], Awaitable[dict[str, tuple[float, Snapshot]]]]


class MetricsHub:
    """The service's figures: each ingress replica's latest cumulative snapshot, by replica id. A plain
    class; the app builder deploys it as `CoeMetricsHub` (one replica, no CPU)."""

    def __init__(self, max_replicas: int = 1000) -> None:
        self._by: dict[str, tuple[float, Snapshot]] = {}
        self.max_replicas = max_replicas

    async def exchange(self, replica: str, snapshot: Snapshot | None) -> dict[str, tuple[float, Snapshot]]:
        """Store `replica`'s snapshot (None: unchanged) and answer every other replica's, with its age in
        seconds."""
        now = time.monotonic()
        if snapshot is not None:
            self._by[replica] = (now, snapshot)
        elif replica in self._by:
            self._by[replica] = (now, self._by[replica][1])
        if len(self._by) > self.max_replicas:  # replica churn: forget the longest silent ones
            for old in sorted(self._by, key=lambda r: self._by[r][0])[: len(self._by) - self.max_replicas]:
                del self._by[old]
        return {r: (now - t, snap) for r, (t, snap) in self._by.items() if r != replica}


def snapshot_of(registry: Any) -> Snapshot:
    """The registry's samples as plain tuples (picklable, comparable), without `_created` timestamps."""
    return tuple(
        (
            m.name,
            m.documentation,
            m.type,
            tuple(
                (s.name, tuple(sorted(s.labels.items())), float(s.value))
                for s in m.samples
                if not s.name.endswith("_created")
            ),
        )
        for m in registry.collect()
    )


def merge(own: Snapshot, peers: list[tuple[float, Snapshot]], stale_s: float = STALE_S) -> Snapshot:
    """`own` plus the peers' samples, summed by series (gauges: live peers only; _MAX_GAUGES: highest)."""
    order: list[str] = []
    heads: dict[str, tuple[str, str]] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for age, snap in [(0.0, own), *peers]:
        for name, doc, typ, samples in snap:
            if typ == "gauge" and age > stale_s:
                continue
            if name not in heads:
                heads[name] = (doc, typ)
                order.append(name)
                sums[name] = {}
            into = sums[name]
            for sample, labels, value in samples:
                key = (sample, labels)
                if key not in into:
                    into[key] = value
                elif name in _MAX_GAUGES:
                    into[key] = max(into[key], value)
                else:
                    into[key] += value
    return tuple(
        (name, *heads[name], tuple((sample, labels, v) for (sample, labels), v in sums[name].items()))
        for name in order
    )


class _Merged:
    """A prometheus_client collector that yields the service-wide families of a Metrics object."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import Metric

        for name, doc, typ, samples in self.metrics.service_snapshot():
            family = Metric(name, doc, typ)
            for sample, labels, value in samples:
                family.add_sample(sample, dict(labels), value)
            yield family


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        #: this replica's own figures
        self.local = CollectorRegistry(auto_describe=True)
        #: what is served: the whole service's figures (this replica's alone without a hub)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Merged(self))
        r = self.local
        self.requests = Counter(
            "coe_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "coe_stage_latency_seconds", "Latency per stage", ["stage"], buckets=_BUCKETS, registry=r
        )
        self.expert_calls = Counter("coe_expert_calls", "Expert calls", ["expert"], registry=r)
        self.expert_errors = Counter("coe_expert_errors", "Failed expert calls", ["expert"], registry=r)
        self.expert_tokens = Counter(
            "coe_expert_tokens", "Tokens by expert and kind", ["expert", "kind"], registry=r
        )
        self.expert_cost = Counter("coe_expert_cost_usd", "Cost in USD by expert", ["expert"], registry=r)
        self.decisions = Counter(
            "coe_route_decisions",
            "Routing decisions by top category, expert and policy",
            ["category", "expert", "policy"],
            registry=r,
        )
        self.fallbacks = Counter(
            "coe_route_fallbacks", "Decisions that fell back to the generalist", registry=r
        )
        self.registry_revision = Gauge(
            "coe_registry_revision", "Registry revision the ingress sees", registry=r
        )
        self.in_flight = Gauge("coe_requests_in_flight", "Requests being served", registry=r)
        self.cache = Counter(
            "coe_cache_lookups",
            "Response cache look-ups (hit, miss; skip = not cacheable)",
            ["result"],
            registry=r,
        )
        self.replica_retries = Counter(
            "coe_replica_retries",
            "Router/gateway calls retried because their replica was lost",
            ["deployment"],
            registry=r,
        )

        self.decisions_dropped = Counter(
            "coe_decisions_dropped",
            "Decision-log entries dropped because the writer's queue was full (database slow or down)",
            registry=r,
        )
        self.batch_size = Histogram(
            "coe_route_batch_size",
            "Size of the embedding batch each routed request was embedded in",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.replicas = Gauge(
            "coe_metrics_replicas", "Live ingress replicas whose figures these metrics include", registry=r
        )
        self.replicas.set_function(lambda: 1)  # each replica counts itself; the sum is the live ones
        # the exchange with the hub (attach()); peers: replica id -> (age in s, snapshot)
        self.replica_id = "local"
        self.peers: dict[str, tuple[float, Snapshot]] = {}
        self.hub_error: str | None = None
        self._exchange: Exchange | None = None
        self._interval_s = 0.5
        self._sent: Snapshot | None = None
        self._sent_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        #: set in a Serve replica: mirrors these figures into Ray's metrics at each exchange
        self.ray_export: RayExport | None = None

    # ----- service-wide figures -------------------------------------------------------------------
    def attach(self, exchange: Exchange, replica_id: str, interval_s: float = 0.5) -> None:
        """Share this replica's figures through the hub's `exchange` (a DeploymentHandle call)."""
        self._exchange, self.replica_id, self._interval_s = exchange, replica_id, interval_s

    @property
    def shared(self) -> bool:
        return self._exchange is not None

    def ensure_started(self) -> None:
        """Start the periodic exchange (first call inside the replica's event loop; cheap after)."""
        if self._exchange is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(self._interval_s)

    async def sync(self, timeout_s: float = 2.0) -> None:
        """Send this replica's figures when they changed (or every HEARTBEAT_S) and take the others'.
        A hub that does not answer leaves the last known peers in place and says so in `hub_error`."""
        if self._exchange is None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            own = snapshot_of(self.local)
            if self.ray_export is not None and own != self._sent:
                self.ray_export.push(own)  # Ray's Prometheus endpoint (deploy/pipeline/ray_export.py)
            now = time.monotonic()
            send = own if own != self._sent or now - self._sent_at > HEARTBEAT_S else None
            try:
                peers = await asyncio.wait_for(self._exchange(self.replica_id, send), timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the hub restarting or not deployed yet: serve what we have
                self.hub_error = f"{type(exc).__name__}: {exc}"[:200]
                log.debug("metrics exchange failed: %s", self.hub_error)
                return
            if send is not None:
                self._sent, self._sent_at = send, now
            self.peers, self.hub_error = dict(peers), None

    def service_snapshot(self) -> Snapshot:
        return merge(snapshot_of(self.local), list(self.peers.values()))

    def live_replicas(self) -> int:
        return 1 + sum(1 for age, _ in self.peers.values() if age <= STALE_S)

    def by_replica(self) -> dict[str, dict[str, float]]:
        """Per replica the hub knows: its chat requests and how long ago it reported (this one: 0)."""

        def chat_requests(snap: Snapshot) -> float:
            return sum(
                v
                for name, _d, _t, samples in snap
                if name == "coe_requests"
                for s, labels, v in samples
                if s.endswith("_total") and ("endpoint", "chat") in labels
            )

        rows = {self.replica_id: {"chat_requests": chat_requests(snapshot_of(self.local)), "age_s": 0.0}}
        for replica, (age, snap) in sorted(self.peers.items()):
            rows[replica] = {"chat_requests": chat_requests(snap), "age_s": round(age, 3)}
        return rows

    def totals(self, metric: Any) -> list[tuple[dict[str, str], float]]:
        """A counter's service-wide `_total` samples, as (labels, value)."""
        name = metric._name
        for family, _doc, _typ, samples in self.service_snapshot():
            if family == name:
                return [(dict(labels), v) for s, labels, v in samples if s.endswith("_total")]
        return []

    def gauge(self, metric: Any) -> float:
        """A label-less gauge's service-wide value."""
        name = metric._name
        for family, _doc, _typ, samples in self.service_snapshot():
            if family == name:
                return sum(v for _s, _labels, v in samples)
        return 0.0

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def stage(self, stage: str, seconds: float) -> None:
        self.latency.labels(stage).observe(max(0.0, seconds))

    def decision(self, d: RouteDecision) -> None:
        category = d.categories[0][0] if d.categories else "none"
        for name in d.expert_names or ("none",):
            self.decisions.labels(category, name, d.policy).inc()
        if d.fallback:
            self.fallbacks.inc()
        for stage in ("embed", "classify", "policy"):
            if stage in d.timings_ms:
                self.stage(stage, d.timings_ms[stage] / 1000.0)
        if "batch_size" in d.timings_ms:
            self.batch_size.observe(d.timings_ms["batch_size"])

    def result(self, r: ChatResult) -> None:
        self.stage("expert", r.latency_ms / 1000.0)
        for a in r.attempts:
            name = str(a.get("expert", "unknown"))
            self.expert_calls.labels(name).inc()
            if a.get("error") or a.get("ok") is False:
                self.expert_errors.labels(name).inc()
        answered = r.contributors or (r.expert,)
        for name in answered:
            self.expert_calls.labels(name).inc()
        self.tokens(r.expert, r.usage, r.cost_usd)

    def tokens(self, expert: str, usage: Usage, cost_usd: float) -> None:
        self.expert_tokens.labels(expert, "prompt").inc(usage.prompt_tokens)
        self.expert_tokens.labels(expert, "completion").inc(usage.completion_tokens)
        if cost_usd:
            self.expert_cost.labels(expert).inc(cost_usd)

    def expert_error(self, expert: str | None) -> None:
        self.expert_errors.labels(expert or "unknown").inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class CountRequests:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs a task group per request): requests by
    endpoint and status, in-flight gauge, and the total stage time up to the response's start."""

    def __init__(self, app: Any, *, metrics: Metrics, endpoints: dict[str, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = self.endpoints.get(path, "models" if path.startswith("/v1/models/") else "other")
        metrics = self.metrics
        metrics.ensure_started()
        t0 = time.perf_counter()
        status = 500

        async def counted(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if endpoint in ("chat", "route"):
                    metrics.stage("total", time.perf_counter() - t0)
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, counted)
        finally:
            metrics.in_flight.dec()
            metrics.request(endpoint, status)


def attach_hub(metrics: Metrics, hub: Any, replica_id: str, interval_s: float) -> None:
    """Share `metrics` through the `CoeMetricsHub` deployment's handle (None: keep them per replica)."""
    if hub is None:
        return

    async def exchange(replica: str, snapshot: Snapshot | None) -> dict[str, tuple[float, Snapshot]]:
        return dict(await hub.exchange.remote(replica, snapshot))

    metrics.attach(exchange, replica_id, interval_s)
    metrics.ray_export = RayExport()
