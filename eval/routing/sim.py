"""Replaying one service routing policy over an outcome matrix (the simulation under
`eval.routing.replay.evaluate_routing`): the registry snapshot whose experts are the matrix's models, the
`Router` over a fitted classifier and quality head, and each policy's knob sweep.

Every decision goes through `router.core.Router.decide`, so the numbers describe the code the service
runs; a query that calls several experts pays for all of them, and its quality is the mean (or, with
`multi="max"`, the best) of theirs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval.outcomes import OutcomeMatrix
from router.defaults import POLICY_NAMES
from router.errors import BadRequest
from router.types import GENERALIST_TAG, ExpertInfo, RegistrySnapshot, RoutingOptions

#: the service's routing policies (router/defaults.py), every one replayed by default
ALL_POLICIES = POLICY_NAMES
#: policies that use the quality head when the router has one
HEAD_POLICIES = ("cost_aware", "quality")
#: the knob each policy's sweep varies (tests/eval/test_routing_steps.py: one per policy name)
KNOBS = {"category": "threshold", "top_k": "k", "top_p": "p", "cost_aware": "tolerance", "quality": "lambda"}
MULTI = ("mean", "max")
NOMINAL_TOKENS = 1000  # router.policies prices a nominal 500 + 500-token request


@dataclass(frozen=True)
class Point:
    """One operating point of a policy on the test queries."""

    knob: float
    cost: float  # mean USD per query
    quality: float  # mean quality
    strong_share: float  # share of queries that called the strong model
    picks: np.ndarray = field(repr=False)  # (n, m) bool: which models answered each query


@dataclass(frozen=True)
class Fitted:
    """What the policies need, fitted on the training part only."""

    snapshot: RegistrySnapshot
    categories: tuple[str, ...]
    probs: np.ndarray  # (n_test, C) classifier probabilities on the test queries
    skills: dict[str, dict[str, float]]  # model -> category -> mean training quality
    skill_n: dict[str, int]  # category -> training queries
    generalist: str
    train_embeddings: np.ndarray | None = None
    test_embeddings: np.ndarray | None = None
    classifier: Any = None  # the SkillClassifier (router.classifier)
    heads: dict[str, Any] = field(default_factory=dict)  # method -> QualityHead
    head_choice: str | None = None  # the method chosen by validation APGR
    head_validation: dict[str, Any] = field(default_factory=dict)


def skill_profiles(train: OutcomeMatrix) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per-model per-category mean quality on `train`, and the number of queries per category."""
    if train.categories is None:
        raise BadRequest("skill profiles need categories in the outcome data")
    cats = train.category_list()
    skills: dict[str, dict[str, float]] = {m: {} for m in train.models}
    counts: dict[str, int] = {}
    for c in cats:
        rows = train.categories == c
        counts[c] = int(rows.sum())
        means = train.quality[rows].mean(axis=0)
        for j, m in enumerate(train.models):
            skills[m][c] = float(means[j])
    return skills, counts


def build_snapshot(
    train: OutcomeMatrix,
    skills: Mapping[str, Mapping[str, float]],
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[RegistrySnapshot, str]:
    """Experts = the matrix's models, priced per 1M prompt / completion tokens as `prices` says (fitted
    on the training costs by eval.training.quality_train.fit_prices), or without prices one flat price per
    token
    such that the policies' nominal request costs the model's mean training cost per query; categories
    map to experts by skill, best first; the model with the best mean training quality is tagged
    generalist."""
    mean_cost = train.cost.mean(axis=0)
    mean_q = train.quality.mean(axis=0)
    generalist = train.models[int(np.argmax(mean_q))]
    experts = {}
    for j, m in enumerate(train.models):
        per_m = float(mean_cost[j]) / NOMINAL_TOKENS * 1e6
        cin, cout = prices[m] if prices is not None else (per_m, per_m)
        experts[m] = ExpertInfo(
            name=m,
            base_url="offline://",
            model=m,
            cost_input_per_m=cin,
            cost_output_per_m=cout,
            tags=(GENERALIST_TAG,) if m == generalist else (),
        )
    cats = train.category_list()
    category_experts = {
        c: tuple(sorted(train.models, key=lambda m, c=c: (-skills[m][c], m)))  # type: ignore[misc]
        for c in cats
    }
    return RegistrySnapshot(
        revision=1,
        experts=experts,
        category_experts=category_experts,
        skills={m: dict(v) for m, v in skills.items()},
    ), generalist


# ------------------------------------------------------------------------------------------ simulation


def operating_point(test: OutcomeMatrix, picks: np.ndarray, knob: float, strong: int, multi: str) -> Point:
    k = picks.sum(axis=1)
    if (k == 0).any():
        raise AssertionError("a query with no model")
    cost = (test.cost * picks).sum(axis=1)
    if multi == "max":
        qual = np.where(picks, test.quality, -np.inf).max(axis=1)
    else:
        qual = (test.quality * picks).sum(axis=1) / k
    return Point(
        knob=float(knob),
        cost=float(cost.mean()),
        quality=float(qual.mean()),
        strong_share=float(picks[:, strong].mean()),
        picks=picks,
    )


class _GivenEmbeddings:
    """The Embedder protocol for a Router whose embeddings are computed up front (eval only)."""

    def __init__(self, dim: int) -> None:
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return "precomputed"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise BadRequest("offline evaluation passes embeddings explicitly")


def eval_router(fitted: Fitted, head: str | None = None) -> Any:
    """A `router.core.Router` over the fitted classifier (and quality head `head`): the service's object."""
    from router.core import Router

    dim = 0 if fitted.test_embeddings is None else int(fitted.test_embeddings.shape[1])
    quality = fitted.heads[head] if head is not None else None
    embedder = _GivenEmbeddings(dim) if (quality is not None or fitted.classifier.needs_embeddings) else None
    return Router(fitted.classifier, embedder, quality=quality)


def simulate_policy(
    name: str,
    fitted: Fitted,
    test: OutcomeMatrix,
    options: RoutingOptions,
    *,
    multi: str = "mean",
    head: str | None = None,
    estimates: Sequence[Any] | None = None,
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Run the service policy `name` with `options` over every test query through `Router.decide`
    (with the quality head `head`'s per-query estimates when given): (picks (n, m), decisions)."""
    del multi
    router = eval_router(fitted, head)
    if head is not None and estimates is None:
        estimates = router.estimates(list(test.texts), fitted.test_embeddings)
    col = {m: j for j, m in enumerate(test.models)}
    picks = np.zeros((test.n, test.m), dtype=bool)
    chosen: list[tuple[str, ...]] = []
    cache: dict[tuple[float, ...], tuple[str, ...]] = {}
    for i in range(test.n):
        row = fitted.probs[i]
        est = None if estimates is None else estimates[i]
        key = tuple(np.round(row, 6))
        names = cache.get(key) if est is None else None
        if names is None:
            decision = router.decide(row, fitted.snapshot, {}, options, timings_ms={}, quality=est)
            names = decision.expert_names
            if est is None:  # without estimates the decision depends on the probabilities only
                cache[key] = names
        for nm in names:
            picks[i, col[nm]] = True
        chosen.append(names)
    return picks, chosen


def sweep_values(name: str, m: int, cost_ref: float = 1.0) -> list[float]:
    """The knob values swept for policy `name`; the quality policy's λ scales with 1 / `cost_ref`
    (the largest mean cost per query of a model on the training part)."""
    if name == "quality":
        return [0.0, *(np.geomspace(1e-3, 1e3, 40) / cost_ref).tolist()]
    if name == "category":
        return [round(x, 3) for x in np.linspace(0.0, 1.0, 21)]
    if name == "top_k":
        return [float(k) for k in range(1, min(m, 6) + 1)]
    if name == "top_p":
        return [round(x, 3) for x in np.linspace(0.05, 1.0, 20)]
    if name == "cost_aware":
        return [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0]
    raise BadRequest(f"unknown policy {name!r}; known: {', '.join(ALL_POLICIES)}")


def options_for(name: str, knob: float, base: RoutingOptions, m: int) -> RoutingOptions:
    from dataclasses import replace

    if name == "category":
        return replace(base, policy=name, threshold=knob, load_bias=False)
    if name == "top_k":
        return replace(base, policy=name, k=int(knob), max_experts=int(knob), load_bias=False)
    if name == "top_p":
        return replace(base, policy=name, p=knob, max_experts=max(base.max_experts, 1), load_bias=False)
    if name == "cost_aware":
        return replace(base, policy=name, tolerance=knob, budget_usd=None, load_bias=False)
    if name == "quality":
        return replace(base, policy=name, lambda_=knob, wtp_usd=None, budget_usd=None, load_bias=False)
    raise BadRequest(f"no routing options for policy {name!r}")


def default_knob(name: str, base: RoutingOptions, cost_ref: float = 1.0) -> float:
    return {
        "category": base.fallback_threshold,
        "top_k": float(base.k),
        "top_p": base.p,
        "cost_aware": base.tolerance,
        # one unit of quality is worth the strongest model's mean cost per query
        "quality": base.lambda_ if base.lambda_ is not None else 1.0 / cost_ref,
    }[name]
