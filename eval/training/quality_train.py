"""Training and calibrating the quality head (router/quality.py) from an outcome matrix.

`train_quality_head(train, emb)`:
 1. split the training queries into `n_folds` folds (stratified by category when there is one);
 2. for each method (knn, logreg, ensemble): predict every query with a head fitted on the other
    folds, fit a per-model Platt calibration on these out-of-fold predictions, and score the *routing*
    the head gives: the out-of-fold APGR of argmax quality − λ·cost swept over λ (the `quality`
    policy's curve), with costs priced from the out-of-fold expected completion lengths; kNN's k is
    picked from `k` the same way (the ensemble uses that k);
 3. keep the method with the best out-of-fold APGR, refit it on all training queries with the
    calibration from step 2, and fit the completion-token ridge where the data has answer lengths.

`fit_prices(mat)`: per-model USD per 1M prompt / completion tokens fitted by non-negative least squares
on (prompt tokens, completion tokens) → cost, tokens estimated as chars / 4: what the head's defaults
are calibrated with and what the offline evaluation's snapshot charges.

`calibrate_lambda(head, emb, prompt_tokens, strong_share=... | budget_usd=...)`: the λ at which the
quality policy sends `strong_share` of the calibration queries to the head's strongest model, or
spends at most `budget_usd` per query on average (RouteLLM's threshold calibration)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.outcomes import OutcomeMatrix
from eval.routing import metrics
from router.errors import BadRequest
from router.quality import (
    CHARS_PER_TOKEN,
    SCORERS,
    QualityHead,
    Scorer,
    logit,
    prompt_tokens,
    scorer_from_arrays,
)

DEFAULT_METHODS = SCORERS


# ------------------------------------------------------------------------------------------ prices


def token_counts(mat: OutcomeMatrix, default_completion: float = 256.0) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens (n,), completion tokens (n, m)) estimated from characters (chars / 4)."""
    pt = np.array([prompt_tokens(t) for t in mat.texts], dtype=np.float64)
    if mat.response_chars is None:
        ct = np.full((mat.n, mat.m), default_completion)
    else:
        ct = np.maximum(1.0, np.ceil(np.asarray(mat.response_chars) / CHARS_PER_TOKEN))
    return pt, ct


def fit_prices(mat: OutcomeMatrix) -> dict[str, tuple[float, float]]:
    """model -> (USD per 1M prompt tokens, USD per 1M completion tokens), NNLS on the matrix's costs."""
    from scipy.optimize import nnls

    pt, ct = token_counts(mat)
    out: dict[str, tuple[float, float]] = {}
    for j, m in enumerate(mat.models):
        a = np.stack([pt, ct[:, j]], axis=1) / 1e6
        y = mat.cost[:, j]
        if not len(y) or float(y.sum()) == 0.0:
            out[m] = (0.0, 0.0)
            continue
        coef, _ = nnls(a, y)
        if not np.isfinite(coef).all() or coef.sum() == 0:  # degenerate: one flat price per token
            flat = float(y.sum() / (pt.sum() + ct[:, j].sum()) * 1e6)
            coef = np.array([flat, flat])
        out[m] = (float(coef[0]), float(coef[1]))
    return out


def predicted_cost(
    models: Sequence[str],
    prices: Mapping[str, tuple[float, float]],
    pt: np.ndarray,
    ct: np.ndarray | None,
    default_completion: float = 500.0,
) -> np.ndarray:
    """(n, m) USD per query: prompt tokens × input price + completion tokens × output price."""
    pin = np.array([prices[m][0] for m in models])
    pout = np.array([prices[m][1] for m in models])
    comp = np.full((len(pt), len(models)), default_completion) if ct is None else ct
    return (pt[:, None] * pin[None, :] + comp * pout[None, :]) / 1e6


# ------------------------------------------------------------------------------------------ fitting


def _soft_logreg(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    """Logistic regression on labels in [0, 1]: each row twice, as 1 with weight y and 0 with 1 − y."""
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():  # one class only: a constant
        p = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        return np.zeros(x.shape[1]), float(np.log(p / (1 - p)))
    xx = np.vstack([x, x])
    yy = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    w = np.concatenate([y, 1 - y])
    keep = w > 0
    lr = LogisticRegression(C=c, max_iter=500, random_state=seed)
    lr.fit(xx[keep], yy[keep], sample_weight=w[keep])
    return lr.coef_[0].astype(np.float64), float(lr.intercept_[0])


class _FitOnRead(Mapping[str, np.ndarray]):
    """The arrays `router.quality.scorer_from_arrays` builds a scorer from, each part fitted when the
    scorer first reads one of its arrays: so that one dispatch (which parts a method needs) decides what
    is fitted here too. Keys are `<part>_<name>` ("knn_emb", "lr_coef", ...)."""

    def __init__(self, parts: Mapping[str, Callable[[], dict[str, np.ndarray]]]) -> None:
        self._parts = parts
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        part = key.split("_", 1)[0]
        if key not in self._arrays and part in self._parts:
            self._arrays.update(self._parts[part]())
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


def fit_scorer(
    method: str, emb: np.ndarray, quality: np.ndarray, *, k: int = 20, c: float = 1.0, seed: int = 0
) -> Scorer:
    """A `method` scorer fitted on (emb, quality): kNN keeps the training rows, logreg fits one soft-label
    logistic regression per model, the ensemble both."""
    if method not in SCORERS:
        raise BadRequest(f"unknown quality head method {method!r}; known: {', '.join(SCORERS)}")

    def knn() -> dict[str, np.ndarray]:
        return {
            "knn_emb": np.asarray(emb, np.float32),
            "knn_quality": np.asarray(quality, np.float64),
            "knn_k": np.array([k]),
        }

    def lr() -> dict[str, np.ndarray]:
        fits = [
            _soft_logreg(np.asarray(emb, np.float64), quality[:, j], c, seed) for j in range(quality.shape[1])
        ]
        return {"lr_coef": np.stack([f[0] for f in fits]), "lr_intercept": np.array([f[1] for f in fits])}

    return scorer_from_arrays(method, _FitOnRead({"knn": knn, "lr": lr}))


def fit_calibration(raw: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """(m, 2) Platt parameters a, b per model: P = sigmoid(a·logit(raw) + b), fitted on soft labels."""
    from sklearn.linear_model import LogisticRegression

    out = np.tile([1.0, 0.0], (raw.shape[1], 1))
    for j in range(raw.shape[1]):
        y = quality[:, j]
        if y.min() == y.max() or len(y) < 10:
            continue
        z = logit(raw[:, j])[:, None]
        zz = np.vstack([z, z])
        yy = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
        w = np.concatenate([y, 1 - y])
        lr = LogisticRegression(C=100.0, max_iter=500)
        lr.fit(zz, yy, sample_weight=w)
        a = float(lr.coef_[0, 0])
        if a > 0:  # a calibration that reverses the order would undo the scorer: keep identity then
            out[j] = (a, float(lr.intercept_[0]))
    return out


def fit_tokens(emb: np.ndarray, completion_tokens: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """(d + 1, m) ridge weights for log1p(completion tokens) on the embedding."""
    x = np.hstack([np.asarray(emb, np.float64), np.ones((len(emb), 1))])
    y = np.log1p(completion_tokens)
    reg = alpha * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(x.T @ x + reg, x.T @ y)


# ------------------------------------------------------------------------------------------ routing metrics


def lambda_grid(cost: np.ndarray, n: int = 40) -> list[float]:
    """λ values spanning "quality only" to "cost only" for (n, m) per-query costs."""
    ref = float(np.mean(cost, axis=0).max()) or 1.0
    return [0.0, *(np.geomspace(1e-3, 1e3, n) / ref).tolist()]


def lambda_picks(pred: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """(n,) column of argmax pred − λ·cost, ties to the cheaper model (the quality policy's rule)."""
    util = pred - lam * cost
    best = util.max(axis=1, keepdims=True)
    masked = np.where(util >= best - 1e-12, cost, np.inf)
    return masked.argmin(axis=1)


def routing_apgr(pred: np.ndarray, est_cost: np.ndarray, mat: OutcomeMatrix) -> dict[str, float | None]:
    """APGR / AIQ on `mat` of the λ-sweep of argmax pred − λ·est_cost (true costs and qualities)."""
    mean_c, mean_q = mat.cost.mean(axis=0), mat.quality.mean(axis=0)
    w, s = int(np.argmin(mean_c)), int(np.argmax(mean_q))
    pts = []
    rows = np.arange(mat.n)
    for lam in lambda_grid(est_cost):
        j = lambda_picks(pred, est_cost, lam)
        pts.append([float(mat.cost[rows, j].mean()), float(mat.quality[rows, j].mean())])
    weak, strong = (float(mean_c[w]), float(mean_q[w])), (float(mean_c[s]), float(mean_q[s]))
    a = metrics.apgr(pts, weak=weak, strong=strong)
    aiq = metrics.aiq(pts, float(mean_c.min()), float(mean_c.max()), anchor=weak)
    return {"apgr": None if not np.isfinite(a) else float(a), "aiq": float(aiq)}


def prediction_metrics(pred: np.ndarray, quality: np.ndarray) -> dict[str, float]:
    """Brier score, log loss and expected calibration error (10 bins) over all (query, model) cells."""
    p = np.clip(pred.reshape(-1), 1e-6, 1 - 1e-6)
    y = quality.reshape(-1)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean()
        for b in range(10)
        if (bins == b).any()
    )
    return {
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "ece": float(ece),
    }


# ------------------------------------------------------------------------------------------ training


def fold_ids(mat: OutcomeMatrix, n_folds: int, seed: int) -> np.ndarray:
    """(n,) fold of each query, 0..n_folds-1, stratified by category when there are categories."""
    if n_folds < 2 or mat.n < 2 * n_folds:
        raise BadRequest(
            f"need at least {2 * max(n_folds, 2)} queries for {n_folds}-fold validation, have {mat.n}"
        )
    rng = np.random.default_rng(seed)
    out = np.empty(mat.n, dtype=np.int64)
    groups = (
        [np.arange(mat.n)]
        if mat.categories is None
        else [np.flatnonzero(mat.categories == c) for c in sorted(set(mat.categories.tolist()))]
    )
    offset = 0
    for g in groups:
        g = rng.permutation(g)
        out[g] = (np.arange(len(g)) + offset) % n_folds
        offset += len(g)
    return out


@dataclass(frozen=True)
class QualityTrainResult:
    head: QualityHead  # the chosen method's head
    validation: dict[str, dict[str, Any]]  # method -> metrics on the validation part
    chosen: str
    heads: dict[str, QualityHead]  # every refitted method's head (`refit_all=True`), else the chosen one


def _oof_cost(
    train: OutcomeMatrix,
    emb: np.ndarray,
    folds: np.ndarray,
    n_folds: int,
    prices: Mapping[str, tuple[float, float]],
) -> np.ndarray:
    """(n, m) predicted USD per training query, its completion tokens predicted out of fold (the
    nominal completion length where the data has no answer lengths)."""
    pt_all, ct_all = token_counts(train)
    if train.response_chars is None:
        return predicted_cost(train.models, prices, pt_all, None)
    oof_ct = np.empty_like(ct_all)
    for f in range(n_folds):
        fi, vi = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        w = fit_tokens(emb[fi], ct_all[fi])
        x = np.hstack([emb[vi].astype(np.float64), np.ones((len(vi), 1))])
        oof_ct[vi] = np.maximum(1.0, np.expm1(np.clip(x @ w, 0, 20)))
    return predicted_cost(train.models, prices, pt_all, oof_ct)


@dataclass(frozen=True)
class _CrossFit:
    """Out-of-fold predictions: every training query is predicted by a head that did not see it."""

    train: OutcomeMatrix
    emb: np.ndarray
    folds: np.ndarray
    n_folds: int
    oof_cost: np.ndarray
    c: float
    seed: int

    def raw(self, method: str, k: int) -> np.ndarray:
        quality = self.train.quality
        raw = np.empty(quality.shape)
        for f in range(self.n_folds):
            fi, vi = np.flatnonzero(self.folds != f), np.flatnonzero(self.folds == f)
            scorer = fit_scorer(method, self.emb[fi], quality[fi], k=k, c=self.c, seed=self.seed)
            raw[vi] = scorer.raw(self.emb[vi])
        return raw

    def score(self, raw: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(Platt calibration, validation metrics) of out-of-fold raw scores."""
        quality = self.train.quality
        cal = fit_calibration(raw, quality)
        pred = 1 / (1 + np.exp(-(logit(raw) * cal[None, :, 0] + cal[None, :, 1])))
        entry: dict[str, Any] = dict(routing_apgr(pred, self.oof_cost, self.train))
        entry.update(prediction_metrics(pred, quality))
        entry["uncalibrated"] = prediction_metrics(raw, quality)
        return cal, entry


def _oof_raws(
    cv: _CrossFit, methods: Sequence[str], ks: Sequence[int]
) -> tuple[dict[str, np.ndarray], int, dict[int, float | None]]:
    """Out-of-fold raw scores per method, kNN's k (chosen by out-of-fold APGR) and the APGR of each k
    tried; the ensemble averages the kNN and logreg parts."""
    raws: dict[str, np.ndarray] = {}
    best_k = ks[0]
    k_search: dict[int, float | None] = {}
    if "knn" in methods or "ensemble" in methods:
        best_apgr = -1.0
        for kk in ks:
            r = cv.raw("knn", kk)
            apgr = cv.score(r)[1]["apgr"]
            k_search[kk] = apgr
            if (apgr if apgr is not None else -1.0) > best_apgr:
                best_apgr, best_k, raws["knn"] = (apgr if apgr is not None else -1.0), kk, r
    if "logreg" in methods or "ensemble" in methods:
        raws["logreg"] = cv.raw("logreg", best_k)
    if "ensemble" in methods:
        raws["ensemble"] = 0.5 * (raws["knn"] + raws["logreg"])
    return raws, best_k, k_search


def _validate(
    cv: _CrossFit,
    methods: Sequence[str],
    raws: Mapping[str, np.ndarray],
    best_k: int,
    k_search: Mapping[int, float | None],
    log: Callable[[str], None] | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """(method -> validation metrics, method -> calibration)."""
    validation: dict[str, dict[str, Any]] = {}
    calibrations: dict[str, np.ndarray] = {}
    for method in methods:
        cal, entry = cv.score(raws[method])
        if method in ("knn", "ensemble"):
            entry["k"] = best_k
            entry["k_search"] = {str(kk): v for kk, v in k_search.items()}
        calibrations[method] = cal
        validation[method] = entry
        if log is not None:
            log(
                f"quality head {method}: {cv.n_folds}-fold validation APGR {entry['apgr']:.4f}, "
                f"AIQ {entry['aiq']:.4f}, "
                f"Brier {entry['brier']:.4f} (uncalibrated {entry['uncalibrated']['brier']:.4f}), "
                f"ECE {entry['ece']:.4f}"
            )
    return validation, calibrations


def train_quality_head(
    train: OutcomeMatrix,
    emb: np.ndarray,
    *,
    embedder_name: str,
    methods: Sequence[str] = DEFAULT_METHODS,
    n_folds: int = 4,
    seed: int = 0,
    k: int | Sequence[int] = (10, 20, 50, 100),
    c: float = 1.0,
    expert_map: Mapping[str, str] | None = None,
    source: str = "",
    log: Callable[[str], None] | None = None,
    refit_all: bool = False,
) -> QualityTrainResult:
    """Fit, validate and choose a quality head on `train` (embeddings `emb`, one row per query)."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape[0] != train.n:
        raise BadRequest(f"{emb.shape[0]} embeddings for {train.n} queries")
    unknown = [m for m in methods if m not in SCORERS]
    if unknown or not methods:
        raise BadRequest(
            f"unknown quality head method(s) {', '.join(unknown) or '(none)'}; known: {', '.join(SCORERS)}"
        )
    folds = fold_ids(train, n_folds, seed)
    prices = fit_prices(train)
    cv = _CrossFit(train, emb, folds, n_folds, _oof_cost(train, emb, folds, n_folds, prices), c, seed)
    ks = sorted({int(x) for x in ([k] if isinstance(k, int) else k)})
    raws, best_k, k_search = _oof_raws(cv, methods, ks)
    validation, calibrations = _validate(cv, methods, raws, best_k, k_search, log)
    chosen = max(methods, key=lambda m: (validation[m]["apgr"] or -1.0, -validation[m]["brier"]))
    tokens = fit_tokens(emb, token_counts(train)[1]) if train.response_chars is not None else None
    strong = train.models[int(np.argmax(train.quality.mean(axis=0)))]
    metrics_ = {
        "chosen_by": f"{n_folds}-fold out-of-fold APGR of the quality policy's λ sweep",
        "chosen": chosen,
        "validation": validation,
        "n_train": int(train.n),
        "n_folds": n_folds,
        "source": source or train.source,
        "k": best_k,
        "C": c,
    }
    heads: dict[str, QualityHead] = {}
    for method in methods if refit_all else [chosen]:
        heads[method] = QualityHead(
            models=train.models,
            method=method,
            scorer=fit_scorer(method, emb, train.quality, k=best_k, c=c, seed=seed),
            calibration=calibrations[method],
            embedder_name=embedder_name,
            embedder_dim=int(emb.shape[1]),
            tokens=tokens,
            expert_map=dict(expert_map or {}),
            prices=prices,
            strong_model=strong,
            metrics=dict(metrics_),
        )
    return QualityTrainResult(head=heads[chosen], validation=validation, chosen=chosen, heads=heads)


# ------------------------------------------------------------------------------------------ calibration


def _share_and_cost(head: QualityHead, pred: np.ndarray, cost: np.ndarray, lam: float) -> tuple[float, float]:
    j = lambda_picks(pred, cost, lam)
    s = head.models.index(head.strong_model)
    return float((j == s).mean()), float(cost[np.arange(len(j)), j].mean())


def calibrate_lambda(
    head: QualityHead,
    emb: np.ndarray,
    prompt_toks: np.ndarray,
    *,
    strong_share: float | None = None,
    budget_usd: float | None = None,
) -> dict[str, Any]:
    """λ for the quality policy on these calibration queries: the one whose share of calls to the
    head's strongest model is closest to `strong_share`, or the smallest whose mean predicted cost per
    query is at most `budget_usd`. Returns {lambda, strong_share, mean_cost_usd, n, target}."""
    if (strong_share is None) == (budget_usd is None):
        raise BadRequest("give exactly one of --strong-share and --budget-usd")
    if strong_share is not None and not 0 <= strong_share <= 1:
        raise BadRequest("--strong-share must be in [0, 1]")
    if budget_usd is not None and budget_usd < 0:
        raise BadRequest("--budget-usd must be >= 0")
    if not head.prices:
        raise BadRequest("this quality head has no prices to calibrate with")
    pred = head.predict(emb)
    cost = predicted_cost(
        head.models, head.prices, np.asarray(prompt_toks, np.float64), head.completion_tokens(emb)
    )
    ref = float(cost.mean(axis=0).max()) or 1.0
    grid = np.concatenate([[0.0], np.geomspace(1e-4, 1e5, 400) / ref])
    stats = [_share_and_cost(head, pred, cost, float(lam)) for lam in grid]
    if strong_share is not None:
        i = int(np.argmin([abs(sh - strong_share) for sh, _ in stats]))
        # refine between the neighbours by bisection on the share (non-increasing in λ)
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        best = (abs(stats[i][0] - strong_share), float(grid[i]))
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            sh, _ = _share_and_cost(head, pred, cost, mid)
            best = min(best, (abs(sh - strong_share), mid))
            if sh > strong_share:
                lo = mid
            else:
                hi = mid
        lam = best[1]
    else:
        ok = [g for g, (_, c) in zip(grid, stats, strict=True) if c <= budget_usd + 1e-15]  # type: ignore[operator]
        if not ok:
            raise BadRequest(
                f"no λ keeps the mean predicted cost within ${budget_usd} per query "
                f"(the cheapest policy costs ${min(c for _, c in stats):.6f})"
            )
        lam = float(min(ok))
    share, mean_cost = _share_and_cost(head, pred, cost, lam)
    return {
        "lambda": float(lam),
        "strong_model": head.strong_model,
        "strong_share": share,
        "mean_cost_usd": mean_cost,
        "n": int(len(pred)),
        "target": {"strong_share": strong_share} if strong_share is not None else {"budget_usd": budget_usd},
    }
