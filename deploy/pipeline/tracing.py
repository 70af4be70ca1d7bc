"""OpenTelemetry tracing of the ingress, and nothing at all when it is off.

On (`COE_OTEL_ENDPOINT` set, or a tracer handed in by a test): one SERVER span per request, a child
span for routing with its stages (`coe.route.embed`, `.classify`, `.policy`, laid out from the decision's
`timings_ms`), one for the cache look-up, and one for the expert call (`coe.expert`, or `coe.aggregate`
when several experts answer) whose events are the failed attempts before the answer (retries and
failover, `coe.attempt_failed`). The incoming W3C `traceparent` / `tracestate` is the parent; the expert
call's own context travels to the expert as its `traceparent` header (experts/tracecontext.py).
Spans leave through a BatchSpanProcessor and the OTLP/HTTP exporter (a background thread).

Off (the default): `Tracing.off()` imports no OpenTelemetry module, creates no span and no thread; an
incoming `traceparent` is still passed through to the expert unchanged (one header look-up)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deploy.settings import Settings
from experts.types import Usage
from router.types import RouteDecision

ROUTE_STAGES = ("embed", "classify", "policy")


@dataclass(frozen=True, slots=True)
class ExpertOutcome:
    """How the expert call of a request ended (the expert span's attributes and events)."""

    expert: str | None
    attempts: Sequence[Mapping[str, Any]] = ()  # the failed attempts before the answer
    usage: Usage | None = None
    cost_usd: float | None = None
    error: BaseException | None = None


def otlp_traces_url(endpoint: str) -> str:
    """`http://host:4318` → `http://host:4318/v1/traces` (a full traces URL is kept as it is)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def _incoming(headers: Mapping[str, str]) -> dict[str, str] | None:
    tp = headers.get("traceparent")
    if not tp:
        return None
    out = {"traceparent": tp}
    ts = headers.get("tracestate")
    if ts:
        out["tracestate"] = ts
    return out


class RequestTrace:
    """The no-op trace of one request (tracing off): every method does nothing, except that the
    client's own trace context is what the expert call carries."""

    trace_id: str | None = None

    def __init__(self, incoming: dict[str, str] | None = None) -> None:
        self._incoming = incoming

    def routed(self, decision: RouteDecision, start_ns: int, end_ns: int) -> None:
        pass

    def cache(self, result: str, start_ns: int, end_ns: int) -> None:
        pass

    def expert_start(self, decision: RouteDecision) -> Mapping[str, str] | None:
        return self._incoming

    def expert_end(self, outcome: ExpertOutcome) -> None:
        pass

    def end(self, status: int, attrs: Mapping[str, Any], error: BaseException | None = None) -> None:
        pass


_NOOP = RequestTrace()


class _SpanTrace(RequestTrace):
    def __init__(self, tracer: Any, incoming: dict[str, str] | None, name: str) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._prop = TraceContextTextMapPropagator()
        self._tracer = tracer
        parent = self._prop.extract(incoming) if incoming else None
        self._span = tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER)
        self._ctx = trace.set_span_in_context(self._span)
        self._expert: Any = None
        self.trace_id = format(self._span.get_span_context().trace_id, "032x")

    def routed(self, decision: RouteDecision, start_ns: int, end_ns: int) -> None:
        span = self._tracer.start_span("coe.route", context=self._ctx, start_time=start_ns)
        span.set_attribute("coe.policy", decision.policy)
        span.set_attribute("coe.experts", list(decision.expert_names))
        span.set_attribute("coe.fallback", decision.fallback)
        if decision.router_version:
            span.set_attribute("coe.router_version", decision.router_version)
        if decision.categories:
            span.set_attribute("coe.category", decision.categories[0][0])
            span.set_attribute("coe.category_probability", float(decision.categories[0][1]))
        child_ctx = self._trace.set_span_in_context(span)
        t = start_ns
        for stage in ROUTE_STAGES:
            ms = decision.timings_ms.get(stage)
            if ms is None:
                continue
            t_end = min(end_ns, t + int(ms * 1e6))
            self._tracer.start_span(f"coe.route.{stage}", context=child_ctx, start_time=t).end(end_time=t_end)
            t = t_end
        span.end(end_time=end_ns)

    def cache(self, result: str, start_ns: int, end_ns: int) -> None:
        span = self._tracer.start_span("coe.cache", context=self._ctx, start_time=start_ns)
        span.set_attribute("coe.cache", result)
        span.end(end_time=end_ns)

    def expert_start(self, decision: RouteDecision) -> Mapping[str, str] | None:
        name = "coe.aggregate" if decision.aggregate and len(decision.experts) > 1 else "coe.expert"
        self._expert = self._tracer.start_span(name, context=self._ctx, kind=self._trace.SpanKind.CLIENT)
        self._expert.set_attribute("coe.candidates", list(decision.expert_names) + list(decision.alternates))
        if decision.aggregate:
            self._expert.set_attribute("coe.aggregate", decision.aggregate)
        carrier: dict[str, str] = {}
        self._prop.inject(carrier, context=self._trace.set_span_in_context(self._expert))
        return carrier

    def expert_end(self, outcome: ExpertOutcome) -> None:
        expert, attempts, usage, cost_usd, error = (
            outcome.expert,
            outcome.attempts,
            outcome.usage,
            outcome.cost_usd,
            outcome.error,
        )
        span, self._expert = self._expert, None
        if span is None:
            return
        for i, a in enumerate(attempts):
            span.add_event(
                "coe.attempt_failed",
                {
                    "coe.attempt": i + 1,
                    "coe.expert": str(a.get("expert", "")),
                    "coe.error": str(a.get("error", "")),
                    "coe.retry": any(b.get("expert") == a.get("expert") for b in attempts[i + 1 :]),
                },
            )
        if expert:
            span.set_attribute("coe.expert", expert)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if cost_usd is not None:
            span.set_attribute("coe.cost_usd", float(cost_usd))
        if error is not None:
            self._error(span, error)
        span.end()

    def _error(self, span: Any, error: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.set_attribute("error.type", type(error).__name__)

    def end(self, status: int, attrs: Mapping[str, Any], error: BaseException | None = None) -> None:
        if self._expert is not None:  # a stream cut short
            self.expert_end(ExpertOutcome(None, error=error))
        self._span.set_attribute("http.response.status_code", status)
        for k, v in attrs.items():
            if v is not None:
                self._span.set_attribute(f"coe.{k}", v)
        if error is not None or status >= 500:
            self._error(self._span, error or RuntimeError(str(status)))
        self._span.end()


class Tracing:
    """Per-request traces; `Tracing.off()` is free. `tracer` is an OpenTelemetry Tracer."""

    def __init__(self, tracer: Any = None, *, provider: Any = None) -> None:
        self._tracer = tracer
        self._provider = provider

    @classmethod
    def off(cls) -> Tracing:
        return cls()

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing:
        endpoint = getattr(settings, "otel_endpoint", None)
        if not endpoint:
            return cls.off()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_traces_url(endpoint))))
        return cls(provider.get_tracer("coe-router"), provider=provider)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def request(self, headers: Mapping[str, str], name: str = "POST /v1/chat/completions") -> RequestTrace:
        incoming = _incoming(headers)
        if self._tracer is None:
            return _NOOP if incoming is None else RequestTrace(incoming)
        return _SpanTrace(self._tracer, incoming, name)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def now_ns() -> int:
    return time.time_ns()
