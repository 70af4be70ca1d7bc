"""Core values shared by every package: the registry snapshot that policies read, live expert
load, routing options, and the RouteDecision. Frozen dataclasses; no framework imports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from router.defaults import (
    DEFAULT_POLICY,
    DEFAULT_THRESHOLD,
    EXPERT_MAX_CONCURRENCY,
    EXPERT_MAX_CONTEXT,
    EXPERT_TIMEOUT_S,
)

#: tags with a meaning to the router
GENERALIST_TAG = "generalist"  # answers when the router is not confident (CoE fallback)
AGGREGATOR_TAG = "aggregator"  # writes the final answer from several experts' answers (synthesize)
JUDGE_TAG = "judge"  # picks the best answer (aggregate="best")

#: what an expert can serve beyond plain text chat; a request needs some of them (deploy/api/protocol.py).
#: `responses`: it serves the OpenAI Responses API itself (`/v1/responses`, as vLLM does), so a Responses
#: request reaches it natively instead of translated to Chat Completions
CAPABILITIES: tuple[str, ...] = ("tools", "json", "vision", "audio", "responses")


def parse_capabilities(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """A comma list (or iterable) of capability names -> sorted unique tuple; ValueError names bad ones."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = sorted({str(i).strip().lower() for i in items if str(i).strip()})
    bad = [n for n in names if n not in CAPABILITIES]
    if bad:
        raise ValueError(f"unknown capabilities {', '.join(bad)}; known: {', '.join(CAPABILITIES)}")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class ExpertInfo:
    """One expert as the registry describes it."""

    name: str
    base_url: str  # OpenAI-compatible root, e.g. http://10.0.0.5:8000/v1
    model: str  # served model name sent in the request body
    api_key_env: str | None = None  # NAME of the env var holding the key, never the key itself
    cost_input_per_m: float = 0.0  # USD per 1M prompt tokens
    cost_output_per_m: float = 0.0  # USD per 1M completion tokens
    max_context: int = EXPERT_MAX_CONTEXT
    max_concurrency: int = EXPERT_MAX_CONCURRENCY
    timeout_s: float = EXPERT_TIMEOUT_S
    enabled: bool = True
    tags: tuple[str, ...] = ()
    notes: str = ""
    #: what it serves beyond plain text chat (subset of CAPABILITIES); () = plain text only
    capabilities: tuple[str, ...] = ()

    def serves(self, needs: Iterable[str]) -> bool:
        """Whether this expert has every capability in `needs`."""
        return all(n in self.capabilities for n in needs)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.cost_input_per_m + completion_tokens * self.cost_output_per_m) / 1e6


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """An immutable view of the registry at one revision; the service swaps whole snapshots."""

    revision: int
    experts: Mapping[str, ExpertInfo]
    #: category -> expert names, best rank first (the Composition-of-Experts map)
    category_experts: Mapping[str, tuple[str, ...]]
    #: expert -> category -> measured skill score in [0, 1] (Symbolic-MoE profiles)
    skills: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "experts", MappingProxyType(dict(self.experts)))
        object.__setattr__(self, "category_experts", MappingProxyType(dict(self.category_experts)))
        object.__setattr__(
            self, "skills", MappingProxyType({k: MappingProxyType(dict(v)) for k, v in self.skills.items()})
        )

    def tagged(self, tag: str) -> tuple[str, ...]:
        """Enabled experts carrying `tag`, in name order."""
        return tuple(sorted(n for n, e in self.experts.items() if e.enabled and tag in e.tags))

    @property
    def generalist(self) -> str | None:
        names = self.tagged(GENERALIST_TAG)
        return names[0] if names else None


def expert_confidence(
    cats: Sequence[tuple[str, float]], category_experts: Mapping[str, Sequence[str]]
) -> float:
    """P of the best category plus P of every other category whose first expert is the best one's: the
    confidence in the *expert* (coding + computer science -> the code expert), which the fallback
    threshold is compared with, so that splitting an expert's mass over its categories does not send a
    clear request to the generalist. `cats`: (category, P), best first."""
    top, p_top = cats[0]
    first = tuple(category_experts.get(top, ()))[:1]
    if not first:
        return p_top
    return p_top + sum(p for c, p in cats[1:] if tuple(category_experts.get(c, ()))[:1] == first)


@dataclass(frozen=True, slots=True)
class ExpertLoad:
    """Live figures for one expert, from the expert pool; the load bias and health checks read them."""

    in_flight: int = 0
    recent_requests: int = 0  # requests started in the recent window
    latency_ms: float = 0.0  # recent mean latency
    error_rate: float = 0.0  # recent error fraction
    healthy: bool = True  # False while the circuit breaker is open or health checks fail


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    """Per-request routing knobs (the `routing` object of the REST API)."""

    policy: str = DEFAULT_POLICY
    k: int = 2  # top_k: experts to recruit
    p: float = 0.7  # top_p: cumulative normalised score to reach
    max_experts: int = 3  # top_p cap (k_max) and overall cap
    #: category: below this confidence -> generalist; None = the router artifact's (manifest
    #: `routing.threshold`, which `Router.decide` fills in), DEFAULT_THRESHOLD when it records none
    threshold: float | None = None
    tolerance: float = 0.05  # cost_aware: quality tolerance from the best
    budget_usd: float | None = None  # cost_aware, quality: per-request budget
    aggregate: str | None = None  # None | "synthesize" | "vote" | "best"
    load_bias: bool = True
    #: capabilities the request needs (tools / json / vision / audio): only experts with all of them
    needs: frozenset[str] = frozenset()
    #: estimated prompt + completion tokens: experts whose max_context is smaller are skipped (0 = no check)
    context_tokens: int = 0
    #: one expert must answer (tools, JSON output, n > 1): no aggregation
    single: bool = False
    #: quality: maximise predicted quality − λ·cost (USD per request); None = the head's calibrated λ
    lambda_: float | None = None
    wtp_usd: float | None = None  # quality: willingness to pay per unit of quality, the same as λ = 1/wtp
    max_tokens: int | None = None  # completion cap used to price a request (else the head's estimate)

    @property
    def fallback_threshold(self) -> float:
        return DEFAULT_THRESHOLD if self.threshold is None else self.threshold


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    """A quality head's predictions for one query, keyed by expert name (router/quality.py); the
    quality-aware policies price each expert at prompt_tokens + its expected completion tokens."""

    quality: Mapping[str, float]  # expert -> predicted P(good answer) in [0, 1]
    completion_tokens: Mapping[str, float] = field(default_factory=dict)  # expert -> expected tokens
    prompt_tokens: int = 0  # estimated from the text: ceil(chars / 4)
    default_lambda: float | None = None  # the head's calibrated λ (`coe router calibrate`)
    head: str = ""  # the head's method, for the decision's reasons

    def __post_init__(self) -> None:
        object.__setattr__(self, "quality", MappingProxyType(dict(self.quality)))
        object.__setattr__(self, "completion_tokens", MappingProxyType(dict(self.completion_tokens)))


@dataclass(frozen=True, slots=True)
class ExpertChoice:
    name: str
    score: float  # predicted quality used for ranking (before bias)
    bias: float = 0.0  # load-balancing bias applied on top of score for selection
    reason: str = ""


#: which reading of a prompt decided its route (RouteDecision.reading): its instruction, the code, trace or
#: log pasted under an instruction that names no subject, both (an instruction too vague to route, averaged
#: with its pasted code), or the fallback (nothing confident enough: the generalist)
READINGS: tuple[str, ...] = ("instruction", "pasted code", "instruction and pasted code", "fallback")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    categories: tuple[tuple[str, float], ...]  # (category, probability), best first
    experts: tuple[ExpertChoice, ...]  # chosen, best first
    alternates: tuple[str, ...] = ()  # eligible experts not chosen, best first: the failover order
    fallback: bool = False  # True when the generalist answered for lack of confidence
    policy: str = DEFAULT_POLICY
    router_version: str = ""
    aggregate: str | None = None
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    #: the intent the router read (its best category) and which reading decided: READINGS
    intent: str = ""
    reading: str = ""

    @property
    def expert_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.experts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["categories"] = [{"category": c, "probability": round(p, 6)} for c, p in self.categories]
        d["timings_ms"] = dict(self.timings_ms)
        return d
