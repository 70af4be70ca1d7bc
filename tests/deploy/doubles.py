"""Small test doubles for the ingress: a registry, a router client and a gateway client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from router.errors import CoeError
from router.types import (
    GENERALIST_TAG,
    ExpertChoice,
    ExpertInfo,
    RegistrySnapshot,
    RouteDecision,
    RoutingOptions,
)


def snapshot(revision: int = 1, *, disabled: tuple[str, ...] = ()) -> RegistrySnapshot:
    experts = {
        "math": ExpertInfo("math", "http://127.0.0.1:1/v1", "m", cost_input_per_m=1.0, cost_output_per_m=2.0),
        "general": ExpertInfo("general", "http://127.0.0.1:1/v1", "g", tags=(GENERALIST_TAG,)),
        "off": ExpertInfo("off", "http://127.0.0.1:1/v1", "o", enabled=False),
    }
    experts = {n: dataclasses.replace(e, enabled=False) if n in disabled else e for n, e in experts.items()}
    return RegistrySnapshot(revision, experts, {"math": ("math", "general"), "other": ("general",)})


class FakeRegistry:
    def __init__(self) -> None:
        self.snap = snapshot()
        self.keys: dict[str, tuple[str, ...]] = {}
        self.verify_calls = 0
        self.settings: dict[str, Any] = {}
        self.fail = False
        self.responses: dict[str, Any] = {}  # stored responses: id -> registry.records.StoredResponse
        self.affinity: dict[str, tuple[str, datetime, int]] = {}  # key -> (expert, expires, write no.)
        self.affinity_reads = 0
        self.affinity_writes = 0

    def revision(self) -> int:
        if self.fail:
            raise RuntimeError("db down")
        return self.snap.revision

    def snapshot(self) -> RegistrySnapshot:
        return self.snap

    def bump(self, **kw: Any) -> None:
        self.snap = snapshot(self.snap.revision + 1, **kw)

    def has_api_keys(self) -> bool:
        return bool(self.keys)

    def verify_key(self, plaintext: str) -> Any:
        self.verify_calls += 1
        scopes = self.keys.get(plaintext)
        return None if scopes is None else SimpleNamespace(scopes=scopes)

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    def add_feedback(
        self, *, decision_id: str, score: Any, comment: str = "", key_id: str | None = None
    ) -> Any:
        """The real validation; no decision is ever logged here, so a valid score meets an unknown id."""
        from registry.decisions import check_feedback
        from router.errors import NotFound

        check_feedback(score, comment)
        raise NotFound(f"unknown completion id {decision_id!r}", param="id", code="completion_not_found")

    # key limits and the decision log (deploy/pipeline/limits.py, deploy/pipeline/decisions.py): in memory
    def key_limits(self) -> dict[str, Any]:
        return {}

    def current_usage(self, now: Any = None) -> dict[str, Any]:
        return {}

    def add_usage(self, deltas: Any) -> int:
        return 0

    def write_decisions(self, records: Any) -> int:
        if not hasattr(self, "decisions"):
            self.decisions: list[Any] = []
        self.decisions.extend(records)
        return len(records)

    def prune_decisions(self, *, retention_days: Any, max_rows: Any) -> int:
        return 0

    # the admin API's writes (deploy/api/admin_api.py): settings in memory; no SQL session to offer
    def set_setting(self, key: str, value: Any) -> int:
        self.settings[key] = value
        self.bump()
        return self.snap.revision

    def session(self, *, write: bool = True) -> Any:
        from router.errors import RegistryUnavailable

        raise RegistryUnavailable("the test double has no database (use registry.Registry('sqlite://'))")

    # stored responses and session affinity: in memory, with the registry's semantics (owner, expiry,
    # history oldest first, NotFound on an unknown previous response); `clock` may be replaced in a test
    def clock(self) -> datetime:
        return datetime.now(UTC)

    def put_response(self, *, id: str, ttl_s: float | None = None, **fields: Any) -> Any:
        """Registry.put_response's keywords (key_id, expert, model, input_items, response,
        previous_response_id), kept in memory."""
        from registry.records import StoredResponse
        from router.errors import Conflict

        if id in self.responses:
            raise Conflict(f"response {id!r} conflicts with an existing entry")
        now = self.clock()
        fields.setdefault("previous_response_id", None)
        fields.update(input_items=tuple(fields["input_items"]), response=dict(fields["response"]))
        expires_at = None if ttl_s is None else now + timedelta(seconds=ttl_s)
        record = StoredResponse(id=id, created_at=now, expires_at=expires_at, **fields)
        self.responses[id] = record
        return record

    def get_response(self, id: str, *, key_id: str | None) -> Any:
        record = self.responses.get(id)
        if record is None or record.key_id != key_id:
            return None
        if record.expires_at is not None and record.expires_at <= self.clock():
            return None
        return record

    def delete_response(self, id: str, *, key_id: str | None) -> bool:
        if self.get_response(id, key_id=key_id) is None:
            return False
        del self.responses[id]
        return True

    def response_history(self, id: str, *, key_id: str | None) -> list[dict[str, Any]]:
        from registry.repository.responses import chain_items

        return chain_items(id, lambda current: self.get_response(current, key_id=key_id))

    def purge_expired(self, now: datetime | None = None) -> int:
        now = now or self.clock()
        gone = [i for i, r in self.responses.items() if r.expires_at is not None and r.expires_at <= now]
        stale = [k for k, (_, expires, _) in self.affinity.items() if expires <= now]
        for i in gone:
            del self.responses[i]
        for k in stale:
            del self.affinity[k]
        return len(gone) + len(stale)

    def remember_affinity(self, keys: Sequence[str], expert: str, ttl_s: float) -> None:
        if not keys:
            return
        table = self.affinity
        self.affinity_writes += 1  # also the order: the newest key wins
        expires = self.clock() + timedelta(seconds=ttl_s)
        for k in keys:
            table[k] = (expert, expires, self.affinity_writes)

    def affinity_expert(self, keys: Sequence[str]) -> str | None:
        table = self.affinity
        self.affinity_reads += 1
        now = self.clock()
        live = [table[k] for k in keys if k in table and table[k][1] > now]
        return max(live, key=lambda e: e[2])[0] if live else None


class FakeRouter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, RoutingOptions]] = []
        self.ready = True

    async def route(self, text: str, options: RoutingOptions) -> RouteDecision:
        self.calls.append((text, options))
        n = options.k if options.policy == "top_k" else 1
        chosen = tuple(
            ExpertChoice(name, 0.9 - i / 10, reason="test") for i, name in enumerate(("math", "general")[:n])
        )
        return RouteDecision(
            categories=(("math", 0.8), ("other", 0.2)),
            experts=chosen,
            alternates=("general",),
            policy=options.policy,
            router_version="test-v1",
            aggregate=options.aggregate if n > 1 else None,
            timings_ms={"embed": 1.0, "classify": 0.5, "policy": 0.1},
        )

    async def route_embedded(self, text: str, options: RoutingOptions) -> tuple[RouteDecision, Any]:
        import numpy as np

        # a deterministic unit vector per text: equal texts are equal, different ones far apart
        rng = np.random.default_rng(abs(hash(text.lower().strip(" ?!."))) % 2**32)
        v = rng.normal(size=8)
        return await self.route(text, options), v / np.linalg.norm(v)

    async def status(self) -> dict[str, Any]:
        return {"ready": self.ready, "router_version": "test-v1", "artifact": "x", "revision": 1}


class FakeGateway:
    def __init__(self) -> None:
        self.requests: list[tuple[RouteDecision, ChatRequest]] = []
        self.error: CoeError | None = None
        self.mid_stream_error: CoeError | None = None
        self.usable: list[str] = ["general", "math"]

    def _name(self, decision: RouteDecision) -> str:
        if len(decision.experts) > 1:
            return f"coe:{decision.aggregate or 'synthesize'}"
        return decision.expert_names[0]

    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        self.requests.append((decision, request))
        if self.error is not None:
            raise self.error
        return ChatResult(
            expert=self._name(decision),
            content="four",
            usage=Usage(10, 3),
            cost_usd=1.6e-5,
            latency_ms=12.0,
            contributors=decision.expert_names,
            attempts=({"expert": "x", "error": "ExpertTimeout", "message": "slow"},),
        )

    async def stream(self, decision: RouteDecision, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.requests.append((decision, request))
        if self.error is not None:
            raise self.error
        name = self._name(decision)
        for piece in ("fo", "ur"):
            yield ChatChunk(expert=name, delta=piece)
        if self.mid_stream_error is not None:
            raise self.mid_stream_error
        yield ChatChunk(expert=name, finish_reason="stop", usage=Usage(10, 2))

    async def status(self) -> dict[str, Any]:
        return {"revision": 1, "enabled": ["general", "math"], "usable": list(self.usable)}


#: the paths of the public (non-admin) API, as the OpenAPI document names them
PUBLIC_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/route",
        "/v1/feedback",
        "/v1/models",
        "/v1/models/{model_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)


def assert_chat_metrics(text: str, count: str = "") -> None:
    """The /metrics exposition `text` counts chat requests answered 200 and 400 (each `count` times when
    given, e.g. " 1.0") and has a latency histogram for every routing stage."""
    for status in ("200", "400"):
        assert f'coe_requests_total{{endpoint="chat",status="{status}"}}{count}' in text, status
    for stage in ("embed", "classify", "policy", "expert", "total"):
        assert f'coe_stage_latency_seconds_count{{stage="{stage}"}}' in text, stage
