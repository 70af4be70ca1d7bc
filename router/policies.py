"""Routing policies, by name: each turns P(category) into a RouteDecision against a registry snapshot
and live load.

    category    Composition of Experts: best category → its top-ranked usable expert; the generalist when
                max P < threshold or when the category has no usable expert (fallback=True).
    top_k       Symbolic-MoE recruiting: score(e) = Σ_c P(c)·skill(e, c); the best k.
    top_p       experts in score order until their normalised cumulative score reaches p (≤ max_experts).
    cost_aware  the cheapest expert whose predicted quality is within `tolerance` of the best; with
                `budget_usd`, the best expert whose request cost fits the budget.
    quality     the expert maximising predicted quality − λ·cost (λ = `lambda_`, or 1/`wtp_usd`, or the
                quality head's calibrated default, else 0); with `budget_usd`, only experts that fit it.

With a quality head (router/quality.py) the decision gets a `QualityEstimate` per query: cost_aware and
quality then use its per-query predicted quality of each expert it covers, and price each request at
its prompt tokens (chars / 4) plus the expert's expected completion tokens (the head's estimate, capped
by `max_tokens`; `max_tokens` or a nominal 500 when the head has none). Without one they use the
skill scores below and a nominal 500 + 500-token request.

skill(e, c) is the measured score in `snapshot.skills` when there is one, otherwise derived from the
category→expert map: rank r (0 = first) → 1/(r+1), unmapped → 0.

Every policy ranks by score + load bias (router/balancer.py) when `options.load_bias` is set and a
balancer is attached, but reports the unbiased score. Disabled and unhealthy experts are never chosen;
when nothing is usable, NoHealthyExpert.

Requirements (`options.needs`, `options.context_tokens`) narrow every policy the same way: an expert that
lacks a needed capability (tools / json / vision / audio) or whose max_context is below the request's
estimated tokens is not usable for this request. When no enabled expert meets them at all, the request is
a BadRequest naming what is missing (no expert could ever serve it); when some do but none is healthy,
NoHealthyExpert. `options.single` (tools, JSON output, n > 1) keeps one chosen expert: no aggregation."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import ClassVar, NamedTuple

import numpy as np

from router.balancer import LoadBias
from router.errors import BadRequest, NoHealthyExpert, RoutingError
from router.types import (
    ExpertChoice,
    ExpertInfo,
    ExpertLoad,
    QualityEstimate,
    RegistrySnapshot,
    RouteDecision,
    RoutingOptions,
    expert_confidence,
)

#: the request size cost_aware prices experts at (tokens), when the caller gives none
NOMINAL_PROMPT_TOKENS = 500
NOMINAL_COMPLETION_TOKENS = 500

Probs = Sequence[tuple[str, float]] | Mapping[str, float]
_HEALTHY = ExpertLoad()


class Ask(NamedTuple):
    """One decision's inputs, as the policies' hooks take them."""

    cats: Sequence[tuple[str, float]]  # P(category), most likely first
    snapshot: RegistrySnapshot
    load: Mapping[str, ExpertLoad]
    options: RoutingOptions


#: what a policy chooses: the experts, the alternates (failover order), whether it fell back
Chosen = tuple[list[ExpertChoice], list[str], bool]
#: the request field that makes a capability needed (the `param` of the 400)
_CAPABILITY_PARAMS = {"tools": "tools", "json": "response_format", "vision": "messages", "audio": "messages"}


def ranked_categories(probs: Probs) -> tuple[tuple[str, float], ...]:
    items = probs.items() if isinstance(probs, Mapping) else probs
    pairs = [(str(c), float(p)) for c, p in items]
    if not pairs:
        raise RoutingError("no category probabilities to route on")
    return tuple(sorted(pairs, key=lambda cp: (-cp[1], cp[0])))


def validate_options(options: RoutingOptions) -> None:
    problems = []
    if options.k < 1:
        problems.append("k must be >= 1")
    if not 0.0 < options.p <= 1.0:
        problems.append("p must be in (0, 1]")
    if options.max_experts < 1:
        problems.append("max_experts must be >= 1")
    if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
        problems.append("threshold must be in [0, 1]")
    if options.tolerance < 0:
        problems.append("tolerance must be >= 0")
    if options.budget_usd is not None and options.budget_usd < 0:
        problems.append("budget_usd must be >= 0")
    if options.lambda_ is not None and not (options.lambda_ >= 0 and np.isfinite(options.lambda_)):
        problems.append("lambda_ must be a finite number >= 0")
    if options.wtp_usd is not None and not options.wtp_usd > 0:
        problems.append("wtp_usd must be > 0")
    if options.lambda_ is not None and options.wtp_usd is not None:
        problems.append("give lambda_ or wtp_usd, not both")
    if options.max_tokens is not None and options.max_tokens < 1:
        problems.append("max_tokens must be >= 1")
    if problems:
        raise RoutingError("invalid routing options: " + "; ".join(problems), param="routing")


_SKILL_CACHE: OrderedDict[int, tuple[RegistrySnapshot, tuple[str, ...], dict[str, int], np.ndarray]] = (
    OrderedDict()
)


def _skill_matrix(snapshot: RegistrySnapshot) -> tuple[tuple[str, ...], dict[str, int], np.ndarray]:
    """(expert names, category -> column, experts × categories skill matrix) for a snapshot, cached.

    Snapshots are immutable and swapped whole, so the few most recent ones are kept by identity."""
    hit = _SKILL_CACHE.get(id(snapshot))
    if hit is not None and hit[0] is snapshot:
        return hit[1], hit[2], hit[3]
    names = tuple(snapshot.experts)
    cats = sorted(set(snapshot.category_experts) | {c for per in snapshot.skills.values() for c in per})
    index = {c: j for j, c in enumerate(cats)}
    matrix = np.zeros((len(names), len(cats)))
    for i, name in enumerate(names):
        for c, j in index.items():
            matrix[i, j] = Policy.skill(name, c, snapshot)
    _SKILL_CACHE[id(snapshot)] = (snapshot, names, index, matrix)
    while len(_SKILL_CACHE) > 8:
        _SKILL_CACHE.popitem(last=False)
    return names, index, matrix


class Policy:
    """Base: shared eligibility, skill and bias logic. Subclasses implement `_choose`."""

    name: ClassVar[str] = ""

    def __init__(self, balancer: LoadBias | None = None, router_version: str = "") -> None:
        self.balancer = balancer
        self.router_version = router_version
        # the request's requirements, set by decide() (a policy object serves one decision)
        self.needs: frozenset[str] = frozenset()
        self.context_tokens = 0

    # --- helpers ----------------------------------------------------------------------------------
    def fits(self, info: ExpertInfo) -> bool:
        """Whether the expert can serve this request at all: capabilities and context window."""
        if self.needs and not info.serves(self.needs):
            return False
        return not (self.context_tokens and info.max_context < self.context_tokens)

    def usable(self, name: str, snapshot: RegistrySnapshot, load: Mapping[str, ExpertLoad]) -> bool:
        info = snapshot.experts.get(name)
        return (
            info is not None
            and info.enabled
            and load.get(name, _HEALTHY).healthy
            and (not (self.needs or self.context_tokens) or self.fits(info))
        )

    def unmet(self, snapshot: RegistrySnapshot) -> str | None:
        """Why no enabled expert can serve this request (None when at least one can)."""
        if not (self.needs or self.context_tokens):
            return None
        enabled = [e for e in snapshot.experts.values() if e.enabled]
        if any(self.fits(e) for e in enabled):
            return None
        for cap in sorted(self.needs):
            if not any(cap in e.capabilities for e in enabled):
                return cap
        if self.needs and not any(e.serves(self.needs) for e in enabled):
            return "+".join(sorted(self.needs))
        return "context"

    def bias(self, name: str, options: RoutingOptions) -> float:
        if self.balancer is None or not options.load_bias:
            return 0.0
        return self.balancer.bias(name)

    @staticmethod
    def skill(expert: str, category: str, snapshot: RegistrySnapshot) -> float:
        measured = snapshot.skills.get(expert)
        if measured is not None and category in measured:
            return float(measured[category])
        ranked = snapshot.category_experts.get(category, ())
        return 1.0 / (ranked.index(expert) + 1) if expert in ranked else 0.0

    def scores(
        self, cats: Sequence[tuple[str, float]], snapshot: RegistrySnapshot, load: Mapping[str, ExpertLoad]
    ) -> dict[str, float]:
        """Σ_c P(c)·skill(e, c) for every usable expert with a positive score.

        One matrix-vector product over the snapshot's skill matrix, built once per snapshot: decision
        time stays flat as the registry grows to 1,000 experts (bench/expert_scaling.py)."""
        names, index, matrix = _skill_matrix(snapshot)
        pv = np.zeros(len(index))
        for c, p in cats:
            j = index.get(c)
            if j is not None:
                pv[j] += p
        totals = matrix @ pv
        out = {}
        for i in np.flatnonzero(totals > 0):
            name = names[i]
            if self.usable(name, snapshot, load):
                out[name] = float(totals[i])
        return out

    def rank(self, scores: Mapping[str, float], options: RoutingOptions) -> list[str]:
        return sorted(scores, key=lambda n: (-(scores[n] + self.bias(n, options)), -scores[n], n))

    def choice(self, name: str, score: float, options: RoutingOptions, reason: str) -> ExpertChoice:
        return ExpertChoice(
            name=name, score=round(float(score), 6), bias=round(self.bias(name, options), 6), reason=reason
        )

    def generalist(self, snapshot: RegistrySnapshot, load: Mapping[str, ExpertLoad]) -> str | None:
        g = snapshot.generalist
        if g is not None and self.usable(g, snapshot, load):
            return g
        from router.types import GENERALIST_TAG

        for name in snapshot.tagged(GENERALIST_TAG):
            if self.usable(name, snapshot, load):
                return name
        return None

    def predicted(
        self, quality: QualityEstimate | None, snapshot: RegistrySnapshot, load: Mapping[str, ExpertLoad]
    ) -> dict[str, float]:
        """The quality head's prediction for every usable expert it covers (empty without a head)."""
        if quality is None:
            return {}
        return {n: float(q) for n, q in quality.quality.items() if self.usable(n, snapshot, load)}

    @staticmethod
    def request_cost(
        name: str, snapshot: RegistrySnapshot, quality: QualityEstimate | None, options: RoutingOptions
    ) -> float:
        """USD for this request on expert `name`: the estimate's prompt tokens and expected completion
        tokens when there is an estimate, else a nominal request."""
        info = snapshot.experts[name]
        if quality is None:
            return info.cost_usd(NOMINAL_PROMPT_TOKENS, options.max_tokens or NOMINAL_COMPLETION_TOKENS)
        expected = quality.completion_tokens.get(name)
        completion: float
        if expected is None:
            completion = float(options.max_tokens or NOMINAL_COMPLETION_TOKENS)
        else:
            completion = min(float(expected), float(options.max_tokens or expected))
        return (quality.prompt_tokens * info.cost_input_per_m + completion * info.cost_output_per_m) / 1e6

    # --- entry point ------------------------------------------------------------------------------
    def decide(
        self,
        probs: Probs,
        snapshot: RegistrySnapshot,
        load: Mapping[str, ExpertLoad],
        options: RoutingOptions,
        quality: QualityEstimate | None = None,
    ) -> RouteDecision:
        """Route one query; `quality` is the quality head's estimate for it, when the router has one."""
        t0 = time.perf_counter()
        validate_options(options)
        cats = ranked_categories(probs)
        self.needs, self.context_tokens = frozenset(options.needs), max(0, options.context_tokens)
        missing = self.unmet(snapshot)
        if missing == "context":
            largest = max((e.max_context for e in snapshot.experts.values() if e.enabled), default=0)
            raise BadRequest(
                f"the request needs about {self.context_tokens} tokens (prompt characters / 4 plus "
                f"max_tokens); the largest context of an enabled expert is {largest}",
                param="messages",
                code="context_length_exceeded",
            )
        if missing is not None:
            raise BadRequest(
                f"no enabled expert supports '{missing}', which this request needs "
                f"(declare it with `coe experts update NAME --capabilities ...`)",
                param=_CAPABILITY_PARAMS.get(missing, "messages"),
                code="unsupported_capability",
            )
        try:
            chosen, alternates, fallback = self._choose_with_quality(
                Ask(cats, snapshot, load, options), quality
            )
        except NoHealthyExpert:
            if not (self.needs or self.context_tokens):
                raise
            chosen, alternates, fallback = self._any_fitting(Ask(cats, snapshot, load, options))
        if not chosen:
            raise NoHealthyExpert("no enabled, healthy expert can serve this request")
        aggregate = options.aggregate
        if options.single and len(chosen) > 1:
            alternates = [c.name for c in chosen[1:]] + list(alternates)
            chosen = [
                replace(
                    chosen[0],
                    reason=chosen[0].reason + "; one expert: the request needs "
                    "tools, JSON output or n > 1, which are not aggregated",
                )
            ]
        if options.single:
            aggregate = None
        names = {c.name for c in chosen}
        failover = tuple(dict.fromkeys(a for a in alternates if a not in names))
        return RouteDecision(
            categories=cats,
            experts=tuple(chosen),
            alternates=failover,
            fallback=fallback,
            policy=self.name,
            router_version=self.router_version,
            aggregate=aggregate,
            timings_ms={"policy": round((time.perf_counter() - t0) * 1000, 4)},
        )

    def _any_fitting(self, ask: Ask) -> Chosen:
        """No mapped expert of these categories can serve the request: the usable experts that can, best
        Σ P(c)·skill first (name order among equals)."""
        cats, snapshot, load, options = ask
        fitting = [n for n in snapshot.experts if self.usable(n, snapshot, load)]
        if not fitting:
            return [], [], True
        score = {n: sum(p * self.skill(n, c, snapshot) for c, p in cats) for n in fitting}
        order = sorted(fitting, key=lambda n: (-score[n], n))
        what = ", ".join(sorted(self.needs)) or f"{self.context_tokens} tokens of context"
        why = f"no expert mapped to these categories serves {what}: the best expert that does"
        return [self.choice(order[0], score[order[0]], options, why)], order[1:], True

    def _choose(self, ask: Ask) -> Chosen:
        raise NotImplementedError

    def _choose_with_quality(self, ask: Ask, quality: QualityEstimate | None) -> Chosen:
        """Policies that use the quality head override this; the others ignore the estimate."""
        del quality
        return self._choose(ask)

    def _generalist_only(self, ask: Ask, why: str) -> Chosen:
        cats, snapshot, load, options = ask
        g = self.generalist(snapshot, load)
        if g is None:
            raise NoHealthyExpert(f"{why}, and no usable generalist expert")
        score = sum(p * self.skill(g, c, snapshot) for c, p in cats)
        return [self.choice(g, score, options, f"{why}: generalist")], [], True


class CategoryPolicy(Policy):
    name = "category"

    def _choose(self, ask: Ask) -> Chosen:
        cats, snapshot, load, options = ask
        top, p_top = cats[0]
        # failover order beyond the chosen one: this category, the generalist, then the next categories
        pool: list[str] = []
        for c, _ in cats:
            pool.extend(n for n in snapshot.category_experts.get(c, ()) if self.usable(n, snapshot, load))
            if c == top:
                g = self.generalist(snapshot, load)
                if g is not None:
                    pool.append(g)
        pool = list(dict.fromkeys(pool))
        generalist = self.generalist(snapshot, load)
        threshold = options.fallback_threshold
        p_top = expert_confidence(cats, snapshot.category_experts)  # the categories sharing top's expert
        if p_top < threshold and generalist is not None:
            why = f"confidence {p_top:.2f} in {top!r}'s expert below threshold {threshold:.2f}"
            chosen, _, _ = self._generalist_only(ask, why)
            return chosen, pool, True
        in_cat = {
            n: self.skill(n, top, snapshot)
            for n in snapshot.category_experts.get(top, ())
            if self.usable(n, snapshot, load)
        }
        if not in_cat and (self.needs or self.context_tokens):
            unfit = [
                n
                for n in snapshot.category_experts.get(top, ())
                if n in snapshot.experts
                and snapshot.experts[n].enabled
                and not self.fits(snapshot.experts[n])
            ]
            nxt_cat = next(
                (
                    (c, p, n)
                    for c, p in cats[1:]
                    for n in snapshot.category_experts.get(c, ())
                    if self.usable(n, snapshot, load)
                ),
                None,
            )
            if unfit and nxt_cat is not None:
                # the category's own experts cannot serve this request: the next-best category's
                c, p, nxt = nxt_cat
                what = ", ".join(sorted(self.needs)) or f"{self.context_tokens} tokens of context"
                why = f"no expert for category {top!r} serves {what}: next category {c!r} (p={p:.2f})"
                score = sum(q * self.skill(nxt, cc, snapshot) for cc, q in cats)
                return [self.choice(nxt, score, options, why)], pool, True
        if not in_cat and generalist is None and pool:
            # no generalist either: the best expert of the next most likely category that has one
            nxt = pool[0]
            score = sum(p * self.skill(nxt, c, snapshot) for c, p in cats)
            why = f"no usable expert for category {top!r} and no generalist: next category's expert"
            return [self.choice(nxt, score, options, why)], pool, True
        if not in_cat:
            chosen, _, _ = self._generalist_only(ask, f"no usable expert for category {top!r}")
            return chosen, pool, True
        best = self.rank(in_cat, options)[0]
        reason = f"category {top!r} (p={p_top:.2f})"
        if p_top < threshold:
            reason += f" below threshold {threshold:.2f}, no generalist"
        return [self.choice(best, in_cat[best], options, reason)], pool, False


class _PrefixPolicy(Policy):
    """top_k and top_p: the experts with skill, best Σ P(c)·skill first; `_take` keeps a prefix of the
    order, the rest (then the generalist) are the alternates."""

    def _choose(self, ask: Ask) -> Chosen:
        cats, snapshot, load, options = ask
        scores = self.scores(cats, snapshot, load)
        if not scores:
            return self._generalist_only(ask, "no expert has skill in these categories")
        order = self.rank(scores, options)
        chosen = self._take(order, scores, options)
        g = self.generalist(snapshot, load)
        return chosen, order[len(chosen) :] + ([g] if g else []), False

    def _take(
        self, order: list[str], scores: Mapping[str, float], options: RoutingOptions
    ) -> list[ExpertChoice]:
        raise NotImplementedError


class TopKPolicy(_PrefixPolicy):
    name = "top_k"

    def _take(
        self, order: list[str], scores: Mapping[str, float], options: RoutingOptions
    ) -> list[ExpertChoice]:
        k = min(options.k, options.max_experts)
        return [
            self.choice(
                n, scores[n], options, f"rank {i + 1} of {len(order)}: Σ P(c)·skill = {scores[n]:.3f}"
            )
            for i, n in enumerate(order[:k])
        ]


class TopPPolicy(_PrefixPolicy):
    name = "top_p"

    def _take(
        self, order: list[str], scores: Mapping[str, float], options: RoutingOptions
    ) -> list[ExpertChoice]:
        total = sum(scores.values())
        chosen: list[ExpertChoice] = []
        cum = 0.0
        for n in order:
            if len(chosen) >= options.max_experts or cum >= options.p:
                break
            cum += scores[n] / total
            chosen.append(
                self.choice(
                    n,
                    scores[n],
                    options,
                    f"normalised score {scores[n] / total:.2f}, cumulative {cum:.2f} (p={options.p:.2f})",
                )
            )
        return chosen


class _PricedPolicy(Policy):
    """cost_aware and quality: each usable expert's quality and request cost."""

    def _choose(self, ask: Ask) -> Chosen:
        cats, snapshot, load, options = ask
        return self._choose_with_quality(ask, None)

    def _priced(
        self, ask: Ask, quality: QualityEstimate | None
    ) -> tuple[dict[str, float], str, dict[str, float], QualityEstimate | None]:
        cats, snapshot, load, options = ask
        """(quality by expert, what it is, request cost by expert, the estimate priced with): the head's
        predicted quality; skill scores and a nominal request when it covers no usable expert."""
        predicted = self.predicted(quality, snapshot, load)
        if predicted and quality is not None:
            source = f"predicted quality ({quality.head or 'quality head'})"
        else:
            quality, predicted, source = None, self.scores(cats, snapshot, load), "skill"
        cost = {n: self.request_cost(n, snapshot, quality, options) for n in predicted}
        return predicted, source, cost, quality


class CostAwarePolicy(_PricedPolicy):
    name = "cost_aware"

    def _choose_with_quality(self, ask: Ask, quality: QualityEstimate | None) -> Chosen:
        cats, snapshot, load, options = ask
        predicted, source, cost, quality = self._priced(ask, quality)
        if not predicted:
            return self._generalist_only(ask, "no expert has skill in these categories")
        biased = {n: q + self.bias(n, options) for n, q in predicted.items()}
        order = self.rank(predicted, options)
        if options.budget_usd is not None:
            within = [n for n in order if cost[n] <= options.budget_usd]
            if not within:
                raise RoutingError(
                    f"no usable expert fits the budget of ${options.budget_usd:.6f} per request "
                    f"(the cheapest costs ${min(cost.values()):.6f} for "
                    + (
                        "this request"
                        if quality is not None
                        else f"a nominal {NOMINAL_PROMPT_TOKENS}+{NOMINAL_COMPLETION_TOKENS}-token request"
                    )
                    + ")",
                    param="routing.budget_usd",
                )
            pick = within[0]
            reason = (
                f"best {source} {predicted[pick]:.3f} within budget ${options.budget_usd:.6f} "
                f"(cost ${cost[pick]:.6f})"
            )
            return [self.choice(pick, predicted[pick], options, reason)], within[1:], False
        best = max(biased.values())
        eligible = [n for n in order if biased[n] >= best - options.tolerance - 1e-12]
        pick = min(eligible, key=lambda n: (cost[n], -biased[n], n))
        reason = (
            f"cheapest (${cost[pick]:.6f}) with {source} {predicted[pick]:.3f} within "
            f"{options.tolerance:.3f} of the best {max(predicted.values()):.3f}"
        )
        return [self.choice(pick, predicted[pick], options, reason)], order, False


class QualityPolicy(_PricedPolicy):
    """argmax_e predicted quality(e) − λ·cost(e); RouteLLM's threshold generalised to many experts."""

    name = "quality"

    @staticmethod
    def lam(options: RoutingOptions, quality: QualityEstimate | None) -> float:
        if options.lambda_ is not None:
            return float(options.lambda_)
        if options.wtp_usd is not None:
            return 1.0 / float(options.wtp_usd)
        if quality is not None and quality.default_lambda is not None:
            return float(quality.default_lambda)
        return 0.0

    def _choose_with_quality(self, ask: Ask, quality: QualityEstimate | None) -> Chosen:
        cats, snapshot, load, options = ask
        lam = self.lam(options, quality)
        predicted, source, cost, quality = self._priced(ask, quality)
        if not predicted:
            return self._generalist_only(ask, "no expert has skill in these categories")
        if options.budget_usd is not None:
            fits = {n: q for n, q in predicted.items() if cost[n] <= options.budget_usd}
            if not fits:
                raise RoutingError(
                    f"no usable expert fits the budget of ${options.budget_usd:.6f} per request "
                    f"(the cheapest costs ${min(cost.values()):.6f})",
                    param="routing.budget_usd",
                )
            predicted = fits
        utility = {n: q - lam * cost[n] for n, q in predicted.items()}
        # ties in utility go to the cheaper expert
        order = sorted(utility, key=lambda n: (-(utility[n] + self.bias(n, options)), cost[n], n))
        pick = order[0]
        reason = (
            f"best {source} − λ·cost: {predicted[pick]:.3f} − {lam:.4g}·${cost[pick]:.6f} "
            f"= {utility[pick]:.4f}"
        )
        return [self.choice(pick, predicted[pick], options, reason)], order[1:], False


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (CategoryPolicy, TopKPolicy, TopPPolicy, CostAwarePolicy, QualityPolicy)
}


def get_policy(name: str, balancer: LoadBias | None = None, router_version: str = "") -> Policy:
    try:
        cls = POLICIES[name]
    except KeyError:
        raise RoutingError(
            f"unknown routing policy {name!r}; known policies: {', '.join(sorted(POLICIES))}",
            param="routing.policy",
        ) from None
    return cls(balancer=balancer, router_version=router_version)
