"""Offline routing evaluation: replay every routing policy over an outcome matrix and measure what it
would have cost and how good its answers would have been.

The policies are the service's own (`router.policies`): a `RegistrySnapshot` is built whose experts are
the matrix's models, with skill profiles (per-model per-category mean quality) and a nominal price
fitted on the training part only, and each test query's category probabilities come from a
`SkillClassifier` (`eval.training.train.fit_classifier`) trained on the training queries. So the numbers
describe
the code the service runs.

When a policy picks several experts (top_k, top_p) every one of them is paid for; the query's quality
is `multi="mean"` the mean of their qualities (a judge that picks one answer at random, a conservative
stand-in for aggregation) or `multi="max"` the best of them (a perfect judge, an upper bound).

Quality-head policies: for each quality head method (`heads`, router/quality.py: knn, logreg, ensemble)
a head is trained on the training part (eval/training/quality_train.py; its calibration and the method choice
use out-of-fold predictions on the training queries only) and the service's `quality` (argmax predicted
quality − λ·cost, λ swept) and `cost_aware` (tolerance swept) policies run with it, reported as
`quality@<method>` and `cost_aware@<method>`; `quality` is the head chosen by validation APGR, the
one `coe router train --outcomes` would deploy. Every decision goes through `Router.decide` with the
query's `QualityEstimate`, as in the service; the snapshot's experts are priced per prompt and
completion token as fitted on the training costs (`eval.training.quality_train.fit_prices`), and each query is
charged what it really cost in the data.

Baselines in the same run: every single model, the best single model (chosen on the training part),
random mixing of the cheapest and the strongest model and the oracle (per query, the cheapest model
with the best quality that query got).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.outcomes import OutcomeMatrix
from eval.routing import metrics
from eval.routing.result import (
    Baselines,
    BestSingle,
    CategoryRow,
    ClassifierResult,
    DatasetInfo,
    DefaultPoint,
    ParetoPoint,
    PointSummary,
    PolicyResult,
    QualityHeadChoice,
    RandomMix,
    Reference,
    RouterCell,
    RoutingResult,
    RunConfig,
    SkillProfile,
)
from eval.routing.sim import (
    ALL_POLICIES,
    HEAD_POLICIES,
    KNOBS,
    MULTI,
    NOMINAL_TOKENS,
    Fitted,
    Point,
    build_snapshot,
    default_knob,
    eval_router,
    operating_point,
    options_for,
    simulate_policy,
    skill_profiles,
    sweep_values,
)
from router.defaults import QUALITY_HEADS
from router.errors import BadRequest
from router.types import RoutingOptions


@dataclass(frozen=True)
class RoutingEvalConfig:
    policies: tuple[str, ...] = ALL_POLICIES
    train_split: float = 0.7
    seed: int = 0
    multi: str = "mean"
    classifier_kind: str = "hybrid"  # eval.training.train kinds: hybrid | embedding | tfidf
    knn_k: tuple[int, ...] = (10, 20, 50, 100)  # kNN head: k chosen among these out of fold
    base_options: RoutingOptions = RoutingOptions()
    heads: tuple[str, ...] = QUALITY_HEADS  # quality head methods (router/quality.py)
    head_folds: int = 4  # cross-fitting folds for the heads' calibration and method choice

    def run_config(self) -> RunConfig:
        """The settings as the result reports them."""
        return RunConfig(
            policies=list(self.policies),
            train_split=self.train_split,
            seed=self.seed,
            multi=self.multi,
            classifier_kind=self.classifier_kind,
            knn_k=list(self.knn_k),
            heads=list(self.heads),
        )


def _embed_both(
    train: OutcomeMatrix,
    test: OutcomeMatrix,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
    needed: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Training and test embeddings, from one call so the embedder loads once (None when not needed)."""
    if needed and embed is None:
        raise BadRequest("this configuration needs an embedder (classifier kind or quality heads)")
    if not needed or embed is None:
        return None, None
    both = np.asarray(embed(list(train.texts) + list(test.texts)), dtype=np.float32)
    return both[: train.n], both[train.n :]


def fit(
    train: OutcomeMatrix,
    test: OutcomeMatrix,
    config: RoutingEvalConfig,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
) -> Fitted:
    """Fit the classifier, skill profiles and snapshot on `train`; classify `test`."""
    from eval.training.quality_train import fit_prices, train_quality_head
    from eval.training.train import fit_classifier

    if train.categories is None or test.categories is None:
        raise BadRequest("routing evaluation needs a category per query (this format has none)")
    skills, counts = skill_profiles(train)
    use_heads = bool(config.heads) and any(p in HEAD_POLICIES for p in config.policies)
    snapshot, generalist = build_snapshot(train, skills, fit_prices(train))
    tr_emb, te_emb = _embed_both(train, test, embed, config.classifier_kind != "tfidf" or use_heads)
    lexical = config.classifier_kind == "tfidf"
    clf = fit_classifier(
        list(train.texts),
        train.categories.tolist(),
        embedder=None,
        embeddings=None if lexical else tr_emb,
        kind=config.classifier_kind,
        categories=train.category_list(),
        seed=config.seed,
    )
    probs = clf.predict_proba(list(test.texts), None if lexical else te_emb)
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
        categories=tuple(clf.categories),
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


def _num(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


@dataclass(frozen=True)
class Anchors:
    """The test part's reference points: weak = the cheapest model, strong = the best mean quality."""

    models: tuple[str, ...]
    weak_index: int
    strong_index: int
    weak: tuple[float, float]  # (mean cost, mean quality)
    strong: tuple[float, float]
    cost_range: tuple[float, float]

    @classmethod
    def of(cls, test: OutcomeMatrix) -> Anchors:
        mean_c, mean_q = test.cost.mean(axis=0), test.quality.mean(axis=0)
        w, s = int(np.argmin(mean_c)), int(np.argmax(mean_q))
        return cls(
            models=test.models,
            weak_index=w,
            strong_index=s,
            weak=(float(mean_c[w]), float(mean_q[w])),
            strong=(float(mean_c[s]), float(mean_q[s])),
            cost_range=(float(mean_c.min()), float(mean_c.max())),
        )

    def reference(self) -> Reference:
        return Reference(
            weak=self.models[self.weak_index],
            strong=self.models[self.strong_index],
            weak_point=self.weak,
            strong_point=self.strong,
            cost_range=self.cost_range,
        )

    def apgr(self, pts: Any) -> float | None:
        return _num(metrics.apgr(pts, weak=self.weak, strong=self.strong))

    def aiq(self, pts: Any) -> float | None:
        return _num(metrics.aiq(pts, *self.cost_range, anchor=self.weak))

    def point(self, c: float, q: float, share: float) -> PointSummary:
        return PointSummary(
            cost=c, quality=q, strong_share=share, apgr=self.apgr([[c, q]]), aiq=self.aiq([[c, q]])
        )


def _curve_summary(
    points: list[Point], anchors: Anchors, knob: str, default: float | None, policy: str, head: str | None
) -> PolicyResult:
    weak, strong = anchors.weak, anchors.strong
    pts = np.array([[p.cost, p.quality] for p in points])
    q95 = 0.95 * strong[1]
    reach = [p for p in points if p.quality >= q95 - 1e-12]
    shares = [p.strong_share for p in points]
    quals = [p.quality for p in points]
    dflt = None
    if default is not None:
        d = min(points, key=lambda p: abs(p.knob - default))
        share = d.picks.sum(axis=0) / d.picks.sum()
        chosen = {m: float(s) for m, s in zip(anchors.models, share, strict=True) if s > 0}
        dflt = DefaultPoint(knob=d.knob, cost=d.cost, quality=d.quality, chosen=chosen)
    return PolicyResult(
        knob=knob,
        apgr=anchors.apgr(pts),
        aiq=anchors.aiq(pts),
        cpt50=metrics.cpt(shares, quals, weak[1], strong[1], 0.5),
        cpt80=metrics.cpt(shares, quals, weak[1], strong[1], 0.8),
        cost_to_pgr50=metrics.cost_to_pgr(pts, weak=weak, strong=strong, x=0.5),
        cost_to_pgr80=metrics.cost_to_pgr(pts, weak=weak, strong=strong, x=0.8),
        quality_at_20pct_strong_cost=metrics.quality_at_cost(pts, 0.2 * strong[0], anchor=weak),
        curve=[[p.cost, p.quality] for p in points],
        knobs=[p.knob for p in points],
        strong_share=shares,
        pareto=pts[metrics.pareto_frontier(pts)].tolist(),
        strong_share_to_95=metrics.share_to_reach(quals, shares, q95),
        cost_to_95=min((p.cost for p in reach), default=None),
        default=dflt,
        policy=policy,
        quality_head=head,
    )


def _check(train: OutcomeMatrix, test: OutcomeMatrix, config: RoutingEvalConfig) -> None:
    if config.multi not in MULTI:
        raise BadRequest(f"unknown --multi {config.multi!r}; known: {', '.join(MULTI)}")
    unknown = [p for p in config.policies if p not in ALL_POLICIES]
    if unknown:
        raise BadRequest(f"unknown policy {', '.join(unknown)}; known: {', '.join(ALL_POLICIES)}")
    if train.models != test.models:
        raise BadRequest("train and test data must have the same models")


def classifier_result(fitted: Fitted, test: OutcomeMatrix, kind: str) -> ClassifierResult:
    """The category router's confusion matrix on the test queries."""
    cats = list(fitted.categories)
    truth = test.categories.tolist()  # type: ignore[union-attr]
    pred = np.asarray(fitted.probs).argmax(axis=1)
    labels = sorted(set(cats) | set(truth))
    li = {c: i for i, c in enumerate(labels)}
    conf = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth, pred.tolist(), strict=True):
        conf[li[t], li[cats[p]]] += 1
    return ClassifierResult(
        labels=labels,
        confusion=conf.tolist(),
        accuracy=float(np.trace(conf) / max(conf.sum(), 1)),
        kind=kind,
    )


def policy_runs(policies: Sequence[str], fitted: Fitted) -> dict[str, tuple[str, str | None]]:
    """Report label -> (service policy, quality head or None): each policy as the service would run
    it (`quality` with the chosen head, or on skill scores without heads), and each head-using policy
    once per head as `<policy>@<head>`."""
    runs: dict[str, tuple[str, str | None]] = {}
    for name in policies:
        runs[name] = (name, fitted.head_choice if name == "quality" and fitted.heads else None)
        if name in HEAD_POLICIES:
            for h in fitted.heads:
                runs[f"{name}@{h}"] = (name, h)
    return runs


def sweep(
    runs: Mapping[str, tuple[str, str | None]],
    fitted: Fitted,
    test: OutcomeMatrix,
    config: RoutingEvalConfig,
    anchors: Anchors,
    cost_ref: float,
    progress: bool,
) -> dict[str, list[Point]]:
    """Every run at every knob value of its sweep, through Router.decide: label -> operating points."""
    from tqdm.auto import tqdm

    estimates = {
        h: eval_router(fitted, h).estimates(list(test.texts), fitted.test_embeddings) for h in fitted.heads
    }
    jobs = [(label, v) for label, (name, _) in runs.items() for v in sweep_values(name, test.m, cost_ref)]
    curves: dict[str, list[Point]] = {label: [] for label in runs}
    for label, v in tqdm(jobs, desc="policies × knob values", unit="run", disable=not progress, leave=False):
        name, head = runs[label]
        picks, _ = simulate_policy(
            name,
            fitted,
            test,
            options_for(name, v, config.base_options, test.m),
            multi=config.multi,
            head=head,
            estimates=None if head is None else estimates[head],
        )
        curves[label].append(operating_point(test, picks, v, anchors.strong_index, config.multi))
    return curves


def baselines(train: OutcomeMatrix, test: OutcomeMatrix, anchors: Anchors) -> tuple[Baselines, Point, int]:
    """Every single model, the best single model on the training part, random weak↔strong mixing and
    the oracle (per query, the cheapest model with the best quality); also the oracle's point and the
    best single model's column."""
    mean_c, mean_q = test.cost.mean(axis=0), test.quality.mean(axis=0)
    s = anchors.strong_index
    singles = {
        m: anchors.point(float(mean_c[j]), float(mean_q[j]), 1.0 if j == s else 0.0)
        for j, m in enumerate(test.models)
    }
    best_train = int(np.argmax(train.quality.mean(axis=0)))
    b = singles[test.models[best_train]]
    best = BestSingle(b.cost, b.quality, b.strong_share, b.apgr, b.aiq, model=test.models[best_train])
    qmax = test.quality.max(axis=1, keepdims=True)
    big = np.where(test.quality >= qmax - 1e-12, test.cost, np.inf)
    oracle_pick = np.zeros(test.quality.shape, dtype=bool)
    oracle_pick[np.arange(test.n), big.argmin(axis=1)] = True
    oracle = operating_point(test, oracle_pick, 0, s, "mean")
    rand = metrics.random_mix(anchors.weak, anchors.strong)
    result = Baselines(
        oracle=anchors.point(oracle.cost, oracle.quality, oracle.strong_share),
        best_single=best,
        random=RandomMix(curve=rand.tolist(), apgr=anchors.apgr(rand), aiq=anchors.aiq(rand)),
        single=singles,
    )
    return result, oracle, best_train


def category_table(
    test: OutcomeMatrix, defaults: Mapping[str, np.ndarray], policies: Sequence[str], multi: str
) -> dict[str, CategoryRow]:
    """Per test category: each model's mean quality and each router's (picks `defaults`) quality and
    cost; a policy's multi-expert answer is scored by `multi`, the baselines pick one model."""
    table: dict[str, CategoryRow] = {}
    for c in test.category_list():
        rows = np.asarray(test.categories == c)
        routers: dict[str, RouterCell] = {}
        for name, picks in defaults.items():
            sub = picks[rows]
            k = sub.sum(axis=1)
            if multi == "max" and name in policies:
                q = np.where(sub, test.quality[rows], -np.inf).max(axis=1)
            else:
                q = (test.quality[rows] * sub).sum(axis=1) / k
            routers[name] = RouterCell(
                quality=float(q.mean()), cost=float((test.cost[rows] * sub).sum(axis=1).mean())
            )
        table[c] = CategoryRow(
            n=int(rows.sum()),
            models={m: float(test.quality[rows, j].mean()) for j, m in enumerate(test.models)},
            routers=routers,
        )
    return table


def pareto_points(curves: Mapping[str, list[Point]], base: Baselines, oracle: Point) -> list[ParetoPoint]:
    """The Pareto frontier over every point of the run: the policies' sweeps, single models, oracle."""
    labelled = [(name, p.cost, p.quality) for name, pts in curves.items() for p in pts]
    labelled += [(f"single:{m}", v.cost, v.quality) for m, v in base.single.items()]
    labelled += [("oracle", oracle.cost, oracle.quality)]
    idx = metrics.pareto_frontier([[c, q] for _, c, q in labelled])
    return [ParetoPoint(label=labelled[i][0], cost=labelled[i][1], quality=labelled[i][2]) for i in idx]


def chosen_counts(models: Sequence[str], defaults: Mapping[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Router -> model -> test queries it sent there, at the router's default knob."""
    return {
        name: {m: int(v) for m, v in zip(models, picks.sum(axis=0), strict=True) if v}
        for name, picks in defaults.items()
    }


def evaluate_routing(
    train: OutcomeMatrix,
    test: OutcomeMatrix,
    config: RoutingEvalConfig,
    *,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    progress: bool = True,
) -> RoutingResult:
    """The whole job on one train/test split (`RoutingResult.to_dict()` is the JSON, docs/eval.md)."""
    _check(train, test, config)
    fitted = fit(train, test, config, embed)
    anchors = Anchors.of(test)
    cost_ref = max(float(train.cost.mean(axis=0).max()), 1e-300)
    runs = policy_runs(config.policies, fitted)
    curves = sweep(runs, fitted, test, config, anchors, cost_ref, progress)
    policies: dict[str, PolicyResult] = {}
    defaults: dict[str, np.ndarray] = {}  # router -> (n, m) picks at its default knob
    for label, pts in curves.items():
        name, head = runs[label]
        dflt = default_knob(name, config.base_options, cost_ref)
        policies[label] = _curve_summary(pts, anchors, KNOBS[name], dflt, name, head)
        defaults[label] = min(pts, key=lambda p: abs(p.knob - dflt)).picks
    base, oracle, best_train = baselines(train, test, anchors)
    defaults["oracle"] = oracle.picks
    defaults["best_single"] = np.eye(test.m, dtype=bool)[np.full(test.n, best_train)]
    return RoutingResult(
        dataset=DatasetInfo(
            source=test.source,
            n_train=train.n,
            n_test=test.n,
            models=test.models,
            categories=test.category_list(),
            cost_note=test.cost_note,
        ),
        config=config.run_config(),
        reference=anchors.reference(),
        policies=policies,
        baselines=base,
        classifier=classifier_result(fitted, test, config.classifier_kind),
        quality_head=QualityHeadChoice(
            chosen=fitted.head_choice,
            chosen_by="out-of-fold APGR on the training queries (cross-fitted)",
            validation=fitted.head_validation,
        )
        if fitted.heads
        else None,
        categories=category_table(test, defaults, list(policies), config.multi),
        pareto=pareto_points(curves, base, oracle),
        skills=SkillProfile(scores=fitted.skills, n=fitted.skill_n, measured_on="train"),
        chosen_counts=chosen_counts(test.models, defaults),
    )


__all__ = [
    "ALL_POLICIES",
    "HEAD_POLICIES",
    "KNOBS",
    "MULTI",
    "NOMINAL_TOKENS",
    "Anchors",
    "Fitted",
    "Point",
    "RoutingEvalConfig",
    "RoutingResult",
    "baselines",
    "build_snapshot",
    "category_table",
    "chosen_counts",
    "classifier_result",
    "default_knob",
    "eval_router",
    "evaluate_routing",
    "fit",
    "options_for",
    "pareto_points",
    "policy_runs",
    "simulate_policy",
    "skill_profiles",
    "sweep",
    "sweep_values",
]
