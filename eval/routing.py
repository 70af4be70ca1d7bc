"""Offline routing evaluation: replay every routing policy over an outcome matrix and measure what it
would have cost and how good its answers would have been.

The policies are the service's own (`router.policies`): a `RegistrySnapshot` is built whose experts are
the matrix's models, with skill profiles (per-model per-category mean quality) and a nominal price
fitted on the training part only, and each test query's category probabilities come from a
`SkillClassifier` (`eval.train.fit_classifier`) trained on the training queries. So the numbers describe
the code the service runs.

When a policy picks several experts (top_k, top_p) every one of them is paid for; the query's quality
is `multi="mean"` the mean of their qualities (a judge that picks one answer at random, a conservative
stand-in for aggregation) or `multi="max"` the best of them (a perfect judge, an upper bound).

Quality-head policies: for each quality head method (`heads`, router/quality.py: knn, logreg, ensemble)
a head is trained on the training part (eval/quality_train.py; its calibration and the method choice
use out-of-fold predictions on the training queries only) and the service's `quality` (argmax predicted
quality − λ·cost, λ swept) and `cost_aware` (tolerance swept) policies run with it, reported as
`quality@<method>` and `cost_aware@<method>`; `quality` is the head chosen by validation APGR, the
one `coe router train --outcomes` would deploy. Every decision goes through `Router.decide` with the
query's `QualityEstimate`, as in the service; the snapshot's experts are priced per prompt and
completion token as fitted on the training costs (`eval.quality_train.fit_prices`), and each query is
charged what it really cost in the data.

Baselines in the same run: every single model, the best single model (chosen on the training part),
random mixing of the cheapest and the strongest model and the oracle (per query, the cheapest model
with the best quality that query got).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval import metrics
from eval.outcomes import OutcomeMatrix
from router.errors import BadRequest
from router.types import GENERALIST_TAG, ExpertInfo, RegistrySnapshot, RoutingOptions

SERVICE_POLICIES = ("category", "top_k", "top_p", "cost_aware", "quality")
ALL_POLICIES = SERVICE_POLICIES
#: policies that use the quality head when the router has one
HEAD_POLICIES = ("cost_aware", "quality")
#: the knob each policy's sweep varies
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
    on the training costs by eval.quality_train.fit_prices), or without prices one flat price per token
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


def _point(test: OutcomeMatrix, picks: np.ndarray, knob: float, strong: int, multi: str) -> Point:
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
        "category": base.threshold,
        "top_k": float(base.k),
        "top_p": base.p,
        "cost_aware": base.tolerance,
        # one unit of quality is worth the strongest model's mean cost per query
        "quality": base.lambda_ if base.lambda_ is not None else 1.0 / cost_ref,
    }[name]


# ------------------------------------------------------------------------------------------ the job


@dataclass(frozen=True)
class RoutingEvalConfig:
    policies: tuple[str, ...] = ALL_POLICIES
    train_split: float = 0.7
    seed: int = 0
    multi: str = "mean"
    classifier_kind: str = "hybrid"  # eval.train kinds: hybrid | embedding | tfidf
    knn_k: tuple[int, ...] = (10, 20, 50, 100)  # kNN head: k chosen among these out of fold
    base_options: RoutingOptions = RoutingOptions()
    heads: tuple[str, ...] = ("knn", "logreg", "ensemble")  # quality head methods (router/quality.py)
    head_folds: int = 4  # cross-fitting folds for the heads' calibration and method choice


def fit(
    train: OutcomeMatrix,
    test: OutcomeMatrix,
    config: RoutingEvalConfig,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
) -> Fitted:
    """Fit the classifier, skill profiles and snapshot on `train`; classify `test`."""
    from eval.train import fit_classifier

    if train.categories is None or test.categories is None:
        raise BadRequest("routing evaluation needs a category per query (this format has none)")
    from eval.quality_train import fit_prices, train_quality_head

    skills, counts = skill_profiles(train)
    use_heads = bool(config.heads) and any(p in HEAD_POLICIES for p in config.policies)
    snapshot, generalist = build_snapshot(train, skills, fit_prices(train))
    need_emb = config.classifier_kind != "tfidf" or use_heads
    if need_emb and embed is None:
        raise BadRequest("this configuration needs an embedder (classifier kind or quality heads)")
    tr_emb = te_emb = None
    if need_emb and embed is not None:  # one call: the embedder loads once
        both = np.asarray(embed(list(train.texts) + list(test.texts)), dtype=np.float32)
        tr_emb, te_emb = both[: train.n], both[train.n :]
    clf = fit_classifier(
        list(train.texts),
        train.categories.tolist(),
        embedder=None,
        embeddings=tr_emb if config.classifier_kind != "tfidf" else None,
        kind=config.classifier_kind,
        categories=train.category_list(),
        seed=config.seed,
    )
    probs = clf.predict_proba(list(test.texts), te_emb if config.classifier_kind != "tfidf" else None)
    clf_cats = tuple(clf.categories)
    heads: dict[str, Any] = {}
    choice, validation = None, {}
    if use_heads:
        assert tr_emb is not None
        trained = train_quality_head(
            train,
            tr_emb,
            embedder_name="eval",
            methods=config.heads,
            n_folds=config.head_folds,
            seed=config.seed,
            k=config.knn_k,
            refit_all=True,
        )
        heads, choice, validation = trained.heads, trained.chosen, trained.validation
    return Fitted(
        snapshot=snapshot,
        categories=clf_cats,
        probs=np.asarray(probs),
        skills=skills,
        skill_n=counts,
        generalist=generalist,
        train_embeddings=tr_emb,
        test_embeddings=te_emb,
        classifier=clf,
        heads=heads,
        head_choice=choice,
        head_validation=validation,
    )


def _curve_summary(
    points: list[Point],
    models: Sequence[str],
    weak: tuple[float, float],
    strong: tuple[float, float],
    c_range: tuple[float, float],
    knob: str,
    default: float | None,
) -> dict[str, Any]:
    pts = np.array([[p.cost, p.quality] for p in points])
    q95 = 0.95 * strong[1]
    reach = [p for p in points if p.quality >= q95 - 1e-12]
    shares = [p.strong_share for p in points]
    quals = [p.quality for p in points]
    out: dict[str, Any] = {
        "knob": knob,
        "apgr": _num(metrics.apgr(pts, weak=weak, strong=strong)),
        "aiq": _num(metrics.aiq(pts, *c_range, anchor=weak)),
        "cpt50": metrics.cpt(shares, quals, weak[1], strong[1], 0.5),
        "cpt80": metrics.cpt(shares, quals, weak[1], strong[1], 0.8),
        "cost_to_pgr50": metrics.cost_to_pgr(pts, weak=weak, strong=strong, x=0.5),
        "cost_to_pgr80": metrics.cost_to_pgr(pts, weak=weak, strong=strong, x=0.8),
        "quality_at_20pct_strong_cost": metrics.quality_at_cost(pts, 0.2 * strong[0], anchor=weak),
        "curve": [[p.cost, p.quality] for p in points],
        "knobs": [p.knob for p in points],
        "strong_share": [p.strong_share for p in points],
        "pareto": pts[metrics.pareto_frontier(pts)].tolist(),
        "strong_share_to_95": metrics.share_to_reach(
            [p.quality for p in points], [p.strong_share for p in points], q95
        ),
        "cost_to_95": min((p.cost for p in reach), default=None),
    }
    if default is not None:
        d = min(points, key=lambda p: abs(p.knob - default))
        share = d.picks.sum(axis=0) / d.picks.sum()
        out["default"] = {
            "knob": d.knob,
            "cost": d.cost,
            "quality": d.quality,
            "chosen": {m: float(s) for m, s in zip(models, share, strict=True) if s > 0},
        }
    return out


def _num(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def evaluate_routing(
    train: OutcomeMatrix,
    test: OutcomeMatrix,
    config: RoutingEvalConfig,
    *,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole job on one train/test split; returns the JSON-able result (see docs/eval.md)."""
    from tqdm.auto import tqdm

    if config.multi not in MULTI:
        raise BadRequest(f"unknown --multi {config.multi!r}; known: {', '.join(MULTI)}")
    unknown = [p for p in config.policies if p not in ALL_POLICIES]
    if unknown:
        raise BadRequest(f"unknown policy {', '.join(unknown)}; known: {', '.join(ALL_POLICIES)}")
    if train.models != test.models:
        raise BadRequest("train and test data must have the same models")
    models = test.models
    fitted = fit(train, test, config, embed)

    # references on the test part: weak = cheapest, strong = best mean quality
    mean_c, mean_q = test.cost.mean(axis=0), test.quality.mean(axis=0)
    w, s = int(np.argmin(mean_c)), int(np.argmax(mean_q))
    weak, strong = (float(mean_c[w]), float(mean_q[w])), (float(mean_c[s]), float(mean_q[s]))
    c_range = (float(mean_c.min()), float(mean_c.max()))

    def point_summary(c: float, q: float, share: float) -> dict[str, Any]:
        pts = [[c, q]]
        return {
            "cost": c,
            "quality": q,
            "strong_share": share,
            "apgr": _num(metrics.apgr(pts, weak=weak, strong=strong)),
            "aiq": _num(metrics.aiq(pts, *c_range, anchor=weak)),
        }

    result: dict[str, Any] = {
        "dataset": {
            "source": test.source,
            "n_train": train.n,
            "n_test": test.n,
            "models": list(models),
            "categories": test.category_list(),
            "cost_note": test.cost_note,
        },
        "config": {
            "policies": list(config.policies),
            "train_split": config.train_split,
            "seed": config.seed,
            "multi": config.multi,
            "classifier_kind": config.classifier_kind,
            "knn_k": list(config.knn_k),
            "heads": list(config.heads),
        },
        "reference": {
            "weak": models[w],
            "strong": models[s],
            "weak_point": list(weak),
            "strong_point": list(strong),
            "cost_range": list(c_range),
        },
        "policies": {},
        "baselines": {},
    }

    # classifier quality (the category router's confusion matrix)
    cats = list(fitted.categories)
    pred = np.asarray(fitted.probs).argmax(axis=1)
    truth_idx = {c: i for i, c in enumerate(cats)}
    labels = sorted(set(cats) | set(test.categories.tolist()))  # type: ignore[union-attr]
    li = {c: i for i, c in enumerate(labels)}
    conf = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(test.categories.tolist(), pred.tolist(), strict=True):  # type: ignore[union-attr]
        conf[li[t], li[cats[p]]] += 1
    result["classifier"] = {
        "labels": labels,
        "confusion": conf.tolist(),
        "accuracy": float(np.trace(conf) / max(conf.sum(), 1)),
        "kind": config.classifier_kind,
    }
    del truth_idx

    # service policies, with and without the quality heads, through Router.decide
    defaults: dict[str, np.ndarray] = {}
    cost_ref = max(float(train.cost.mean(axis=0).max()), 1e-300)
    runs: dict[str, tuple[str, str | None]] = {}  # report label -> (policy, head)
    for name in config.policies:
        if name == "quality" and not fitted.heads:
            runs[name] = (name, None)  # skill scores and a nominal request: the fallback path
        elif name == "quality":
            runs[name] = (name, fitted.head_choice)
        else:
            runs[name] = (name, None)
        if name in HEAD_POLICIES:
            for h in fitted.heads:
                runs[f"{name}@{h}"] = (name, h)
    estimates: dict[str, Any] = {}
    for h in fitted.heads:
        estimates[h] = eval_router(fitted, h).estimates(list(test.texts), fitted.test_embeddings)
    jobs = [
        (label, v) for label, (name, _) in runs.items() for v in sweep_values(name, len(models), cost_ref)
    ]
    curves: dict[str, list[Point]] = {label: [] for label in runs}
    for label, v in tqdm(jobs, desc="policies × knob values", unit="run", disable=not progress, leave=False):
        name, head = runs[label]
        picks, _ = simulate_policy(
            name,
            fitted,
            test,
            options_for(name, v, config.base_options, len(models)),
            multi=config.multi,
            head=head,
            estimates=None if head is None else estimates[head],
        )
        curves[label].append(_point(test, picks, v, s, config.multi))
    for label, pts in curves.items():
        name, head = runs[label]
        dflt = default_knob(name, config.base_options, cost_ref)
        summary = _curve_summary(pts, models, weak, strong, c_range, KNOBS[name], dflt)
        summary["policy"], summary["quality_head"] = name, head
        result["policies"][label] = summary
        defaults[label] = min(pts, key=lambda p: abs(p.knob - dflt)).picks
    if fitted.heads:
        result["quality_head"] = {
            "chosen": fitted.head_choice,
            "chosen_by": "out-of-fold APGR on the training queries (cross-fitted)",
            "validation": fitted.head_validation,
        }

    # baselines
    singles = {
        m: point_summary(float(mean_c[j]), float(mean_q[j]), 1.0 if j == s else 0.0)
        for j, m in enumerate(models)
    }
    best_train = int(np.argmax(train.quality.mean(axis=0)))
    best = dict(singles[models[best_train]], model=models[best_train])
    qmax = test.quality.max(axis=1, keepdims=True)
    big = np.where(test.quality >= qmax - 1e-12, test.cost, np.inf)
    oracle_pick = np.zeros(test.quality.shape, dtype=bool)
    oracle_pick[np.arange(test.n), big.argmin(axis=1)] = True
    oracle = _point(test, oracle_pick, 0, s, "mean")
    rand = metrics.random_mix(weak, strong)
    result["baselines"] = {
        "oracle": point_summary(oracle.cost, oracle.quality, oracle.strong_share),
        "best_single": best,
        "random": {
            "curve": rand.tolist(),
            "apgr": _num(metrics.apgr(rand, weak=weak, strong=strong)),
            "aiq": _num(metrics.aiq(rand, *c_range, anchor=weak)),
        },
        "single": singles,
    }
    defaults["oracle"] = oracle_pick
    defaults["best_single"] = np.eye(len(models), dtype=bool)[np.full(test.n, best_train)]

    # per-category table: each model's quality, and each router's at its default knob
    table: dict[str, Any] = {}
    for c in test.category_list():
        rows = np.asarray(test.categories == c)
        entry: dict[str, Any] = {
            "n": int(rows.sum()),
            "models": {m: float(test.quality[rows, j].mean()) for j, m in enumerate(models)},
            "routers": {},
        }
        for name, picks in defaults.items():
            sub = picks[rows]
            k = sub.sum(axis=1)
            if config.multi == "max" and name in result["policies"]:
                q = np.where(sub, test.quality[rows], -np.inf).max(axis=1)
            else:
                q = (test.quality[rows] * sub).sum(axis=1) / k
            entry["routers"][name] = {
                "quality": float(q.mean()),
                "cost": float((test.cost[rows] * sub).sum(axis=1).mean()),
            }
        table[c] = entry
    result["categories"] = table

    # Pareto frontier over every point of the run
    labelled = [(name, p.cost, p.quality) for name, pts in curves.items() for p in pts]
    labelled += [(f"single:{m}", v["cost"], v["quality"]) for m, v in singles.items()]
    labelled += [("oracle", oracle.cost, oracle.quality)]
    idx = metrics.pareto_frontier([[c, q] for _, c, q in labelled])
    result["pareto"] = [
        {"label": labelled[i][0], "cost": labelled[i][1], "quality": labelled[i][2]} for i in idx
    ]

    # skill profiles measured on the training part (for `coe experts profile --from-eval`)
    result["skills"] = {"scores": fitted.skills, "n": fitted.skill_n, "measured_on": "train"}
    result["chosen_counts"] = {
        name: dict(Counter({m: int(v) for m, v in zip(models, picks.sum(axis=0), strict=True) if v}))
        for name, picks in defaults.items()
    }
    return result
