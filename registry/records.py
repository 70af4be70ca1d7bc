"""Plain frozen records returned by the repository (no ORM object leaves registry/)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, NotRequired, TypedDict

from router.types import ExpertInfo

#: the scopes an API key may carry: the OpenAI-compatible API, the admin API (and a restricted /metrics)
QUERY_SCOPE = "query"
ADMIN_SCOPE = "admin"
SCOPES: tuple[str, ...] = (QUERY_SCOPE, ADMIN_SCOPE)


@dataclass(frozen=True, slots=True)
class ExpertRecord:
    """An expert as stored: registry.spec.ExpertSpec's fields (tuples for lists) and its timestamps."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None
    cost_input_per_m: float
    cost_output_per_m: float
    max_context: int
    max_concurrency: int
    timeout_s: float
    enabled: bool
    tags: tuple[str, ...]
    notes: str
    capabilities: tuple[str, ...]
    created_at: datetime
    updated_at: datetime

    def to_info(self) -> ExpertInfo:
        return ExpertInfo(**{f.name: getattr(self, f.name) for f in fields(ExpertInfo)})


@dataclass(frozen=True, slots=True)
class CategoryRecord:
    name: str
    description: str
    #: (expert name, rank), best rank first
    experts: tuple[tuple[str, int], ...] = ()
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SkillScoreRecord:
    expert: str
    category: str
    score: float
    n: int
    source: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        return self.active and scope in self.scopes


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import did (or would do, with --dry-run)."""

    added: dict[str, int] = field(default_factory=dict)  # kind -> count
    updated: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    revision: int = 0

    def describe(self) -> str:
        parts = []
        for verb, counts in (("added", self.added), ("updated", self.updated), ("removed", self.removed)):
            items = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            if items:
                parts.append(f"{verb} {items}")
        return "; ".join(parts) or "no changes"


#: budget periods of an API key: spend resets at 00:00 UTC each day, on the 1st of each month, or never
BUDGET_PERIODS: tuple[str, ...] = ("day", "month", "total")


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What one active key may use; None = unlimited."""

    key_id: str
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Usage to add to a key's row for one budget period (what a replica batched since its last flush)."""

    key_id: str
    period_start: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class KeyUsageRecord:
    key_id: str
    period_start: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One completion as the decision log keeps it."""

    id: str
    created_at: datetime
    key_id: str | None
    policy: str
    categories: tuple[tuple[str, float], ...]
    experts: tuple[str, ...]  # the experts whose answer the client got (contributors of an aggregation)
    answered_by: str | None
    cost_usd: float
    latency_ms: float
    cache: str | None = None
    prompt: str | None = None
    feedback_score: float | None = None
    feedback_comment: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    decision_id: str
    score: float
    comment: str
    key_id: str | None
    created_at: datetime


class ResponseToStore(TypedDict):
    """What storing a Responses API response takes (registry.Registry.put_response's keywords)."""

    id: str
    key_id: str | None  # the owner's digest (None: the service runs without API keys)
    expert: str
    model: str
    input_items: Sequence[dict[str, Any]]  # the request's input, as Responses items
    response: dict[str, Any]  # the Response object the client got
    previous_response_id: NotRequired[str | None]
    ttl_s: NotRequired[float | None]  # retention; None: until deleted


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A stored Responses API response (`store: true`): what `previous_response_id`, GET and DELETE read."""

    id: str
    key_id: str | None  # the owner's digest (None: the service runs without API keys)
    expert: str
    model: str
    created_at: datetime
    expires_at: datetime | None
    previous_response_id: str | None
    input_items: tuple[dict[str, Any], ...]  # the request's input, as Responses items
    response: dict[str, Any]  # the Response object the client got

    @property
    def output_items(self) -> tuple[dict[str, Any], ...]:
        return tuple(i for i in self.response.get("output") or () if isinstance(i, dict))
