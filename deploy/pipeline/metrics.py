"""Prometheus metrics of the ingress process (`GET /metrics`). Each Metrics object owns its own
CollectorRegistry, so tests and several app instances never clash on global names."""

from __future__ import annotations

import time
from typing import Any

from experts.types import ChatResult, Usage
from router.types import RouteDecision

STAGES = ("embed", "classify", "policy", "expert", "total")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
