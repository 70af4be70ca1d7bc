"""What the ingress notes about each chat completion, in one place: the trace (pipeline/tracing.py), the key's
usage (pipeline/limits.py), the decision log entry (pipeline/decisions.py) and the access-log line.

Access log: one JSON object a line on logger `coe.access` (INFO), for every chat completion request,
answered or refused:

    {"event": "access", "id": completion id, "key_id": public key id (never the key), "model": asked for,
     "policy", "expert": who answered, "status", "latency_ms", "prompt_tokens", "completion_tokens",
     "cost_usd", "cache": hit|miss|null, "stream", "trace_id", "error": error code or null}

The prompt text (the routing text) is added as "prompt" only with `COE_LOG_PROMPTS=true`."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from deploy.pipeline.decisions import DecisionLog
from deploy.pipeline.limits import KeyLimiter
from deploy.pipeline.tracing import ExpertOutcome, RequestTrace, Tracing, now_ns
from deploy.serve.seams import ServiceRegistry
from deploy.settings import Settings
from experts.tracecontext import OUTGOING_HEADERS
from experts.types import ChatResult, Usage
from registry.records import DecisionRecord
from router.errors import CoeError
from router.types import RouteDecision

access_log = logging.getLogger("coe.access")

#: API keys look like coe_<12 hex id>_<secret>: the id is public, the ingress logs and limits by it
_KEY_PREFIX = "coe_"


def key_id_of(authorization: str | None) -> str | None:
    """The public id of the bearer key (call after auth accepted it), or None."""
    if not authorization:
        return None
    kind, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if kind.lower() != "bearer" or not value.startswith(_KEY_PREFIX):
        return None
    key_id = value[len(_KEY_PREFIX) : len(_KEY_PREFIX) + 12]
    return (
        key_id if len(key_id) == 12 and value[len(_KEY_PREFIX) + 12 : len(_KEY_PREFIX) + 13] == "_" else None
    )


def configure_access_log() -> None:
    """Send `coe.access` lines to stderr as they are, unless logging was configured for it already."""
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


class RequestObs:
    def __init__(self, observer: Observer, trace: RequestTrace, key_id: str | None) -> None:
        self._o = observer
        self.trace = trace
        self.key_id = key_id
        self.t0 = time.perf_counter()
        self.model: str | None = None
        self.stream = False
        self.prompt: str | None = None
        self.decision: RouteDecision | None = None
        self.cache: str | None = None
        self.done = False
        self._route_start = 0

    # ----- hooks the ingress calls ----------------------------------------------------------------
    def parsed(self, model: str, stream: bool, prompt: str) -> None:
        self.model, self.stream = model, stream
        if self._o.log_prompts:
            self.prompt = prompt

    def routing(self) -> None:
        self._route_start = now_ns()

    def decided(self, decision: RouteDecision) -> None:
        self.decision = decision
        self.trace.routed(decision, self._route_start or now_ns(), now_ns())

    def looked_up(self, result: str, start_ns: int) -> None:
        if result != "skip":
            self.cache = result
        self.trace.cache(result, start_ns, now_ns())

    @contextlib.contextmanager
    def expert_call(self, decision: RouteDecision) -> Iterator[None]:
        """Around the gateway call (a stream: until its first chunk): the expert span and the trace
        context on the outgoing request."""
        headers = self.trace.expert_start(decision)
        token = OUTGOING_HEADERS.set(headers) if headers else None
        try:
            yield
        except BaseException as exc:
            self.trace.expert_end(
                ExpertOutcome(getattr(exc, "expert", None), getattr(exc, "attempts", ()), error=exc)
            )
            raise
        finally:
            if token is not None:
                OUTGOING_HEADERS.reset(token)

    def answered(self, completion_id: str, result: ChatResult) -> None:
        """A complete answer (JSON, or a cache hit); ends the expert span when there was a call."""
        if self.cache != "hit":
            self.trace.expert_end(
                ExpertOutcome(result.expert, result.attempts, result.usage, result.cost_usd)
            )
        experts = result.contributors or (result.expert,)
        self._finish(200, completion_id, result.expert, experts, result.usage, result.cost_usd, None)

    def streamed(self, completion_id: str, expert: str | None, usage: Usage, cost_usd: float | None) -> None:
        self.trace.expert_end(ExpertOutcome(expert, usage=usage, cost_usd=cost_usd))
        self._finish(200, completion_id, expert, (expert,) if expert else (), usage, cost_usd or 0.0, None)

    def failed(self, exc: BaseException, completion_id: str | None = None) -> None:
        status = (
            exc.status
            if isinstance(exc, CoeError)
            else 400  # pydantic's ValidationError: deploy/api/errors.py answers it with 400
            if type(exc).__name__ == "ValidationError"
            else 499
            if _cancelled(exc)
            else 500
        )
        self._finish(status, completion_id, None, (), Usage(), 0.0, exc)

    # ----- the end ----------------------------------------------------------------------------------
    def _finish(
        self,
        status: int,
        completion_id: str | None,
        expert: str | None,
        experts: tuple[str, ...],
        usage: Usage,
        cost_usd: float,
        error: BaseException | None,
    ) -> None:
        if self.done:
            return
        self.done = True
        latency_ms = (time.perf_counter() - self.t0) * 1000.0
        o = self._o
        d = self.decision
        if status == 200:
            o.limiter.record(self.key_id, usage, cost_usd)
            if o.decisions is not None and d is not None and completion_id:
                o.decisions.submit(
                    DecisionRecord(
                        id=completion_id,
                        created_at=datetime.now(UTC),
                        key_id=self.key_id,
                        policy=d.policy,
                        categories=tuple(d.categories),
                        experts=tuple(experts),
                        answered_by=expert,
                        cost_usd=float(cost_usd or 0.0),
                        latency_ms=latency_ms,
                        cache=self.cache,
                        prompt=self.prompt,
                    )
                )
        code = getattr(error, "code", None) or (type(error).__name__ if error is not None else None)
        self.trace.end(
            status,
            {"policy": d.policy if d else None, "expert": expert, "cache": self.cache, "key_id": self.key_id},
            error if status >= 500 or status == 499 else None,
        )
        if o.access and access_log.isEnabledFor(logging.INFO):
            line: dict[str, Any] = {
                "event": "access",
                "id": completion_id,
                "key_id": self.key_id,
                "model": self.model,
                "policy": d.policy if d else None,
                "expert": expert,
                "status": status,
                "latency_ms": round(latency_ms, 3),
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cost_usd": cost_usd,
                "cache": self.cache,
                "stream": self.stream,
                "trace_id": self.trace.trace_id,
                "error": code,
            }
            if self.prompt is not None:
                line["prompt"] = self.prompt
            access_log.info(json.dumps(line, ensure_ascii=False, separators=(",", ":")))


def _cancelled(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError | GeneratorExit)


def ingress_replica_count(settings: Settings) -> int:
    """The most ingress replicas the app builder may run (deploy/serve/app.py's sizing): one-hop sizes its
    ingress by the router settings; with autoscaling, the ceiling."""
    n = (
        max(settings.router_replicas, settings.ingress_replicas)
        if settings.topology == "onehop"
        else settings.ingress_replicas
    )
    return max(n, settings.autoscale_max_replicas) if settings.autoscale else n


class Observer:
    def __init__(
        self,
        *,
        tracing: Tracing,
        limiter: KeyLimiter,
        decisions: DecisionLog | None,
        log_prompts: bool = False,
        access: bool = True,
    ) -> None:
        self.tracing = tracing
        self.limiter = limiter
        self.decisions = decisions
        self.log_prompts = log_prompts
        self.access = access

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        registry: ServiceRegistry,
        *,
        on_drop: Any = None,
        tracing: Tracing | None = None,
    ) -> Observer:
        replicas = settings.limits_replicas or ingress_replica_count(settings)
        decisions = None
        if settings.decision_log:
            decisions = DecisionLog(
                registry,
                max_queue=settings.decision_queue,
                retention_days=settings.decision_retention_days or None,
                max_rows=settings.decision_max_rows or None,
                on_drop=on_drop or (lambda: None),
            )
        if settings.access_log:
            configure_access_log()
        return cls(
            tracing=tracing or Tracing.from_settings(settings),
            limiter=KeyLimiter(registry, replicas=replicas, flush_s=settings.usage_flush_s),
            decisions=decisions,
            log_prompts=settings.log_prompts,
            access=settings.access_log,
        )

    def start(self, request: Any, name: str = "POST /v1/chat/completions") -> RequestObs:
        headers = request.headers
        return RequestObs(self, self.tracing.request(headers, name), key_id_of(headers.get("authorization")))

    def close(self) -> None:
        self.limiter.close()
        if self.decisions is not None:
            self.decisions.close()
        self.tracing.shutdown()
