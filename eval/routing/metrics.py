"""Cost–quality metrics for routers. Everything here is plain numpy over (cost, quality) points, where
cost is the average USD per query and quality the average quality in [0, 1] of one operating point
(one knob setting of a policy, one single model, ...).

**Budget curve.** A policy's points are turned into the quality it can reach within an average budget
`b`: the *non-decreasing upper convex hull* of its points (RouterBench, Hu et al. 2024, §3.2: any two
operating points can be mixed at random, so every point on the segment between them is reachable, and
spending less than the budget is always allowed). The hull is anchored at the weak (cheapest) model's
point, because any router can send a share of its queries to the cheapest model — RouteLLM's random
router is exactly that mix. Outside the span of its points the curve is extended flat.

**AIQ** (Average Improvement in Quality, RouterBench §3.2): the mean of the budget curve over the
common cost range [c_lo, c_hi] (by default the cheapest and the most expensive single model's average
cost):  AIQ = 1/(c_hi − c_lo) ∫_{c_lo}^{c_hi} Q̃(c) dc.  Computed exactly (the curve is piecewise linear).

**APGR** (Average Performance Gap Recovered, RouteLLM, Ong et al. 2024, §5.1): with a weak model W (the
cheapest) and a strong model S (the best average quality), the performance gap recovered at budget c is
PGR(c) = (Q̃(c) − q_W) / (q_S − q_W), clipped to [0, 1], and
APGR = 1/(c_S − c_W) ∫_{c_W}^{c_S} PGR(c) dc,
i.e. RouteLLM's integral over the share of calls to the strong model, generalised to many models by
integrating over the normalised average cost (for two models with fixed per-call prices the two are the
same axis). The weak model scores 0; always calling the strong model, or mixing W and S at random,
scores 0.5; the oracle scores 1 whenever its average cost is at most c_W (it then reaches PGR ≥ 1 at
every budget) and a little less when it must pay more than W to be right (with fixed per-model prices
it must, whenever W is wrong and S is right: then APGR(oracle) = 1 − x·t/2, where x is its normalised
cost and t = (q_S − q_W)/(q_oracle − q_W)). A metric that gave 1 to every single point at or above
q_S would score "always call the strong model" as a perfect router, which it is not.

**Call-share to 95 %**: the smallest share of queries sent to S among a policy's points whose quality
is at least 95 % of q_S (RouteLLM reports this as "% calls to GPT-4 to reach 95 % of its quality"),
and the matching average cost. None when no point gets there.

**CPT(x %)** (RouteLLM, Ong et al. 2024, §5.1: "call-performance threshold"): the smallest share of
calls to the strong model at which a router reaches x % of the performance gap, PGR ≥ x. Computed on the
non-decreasing upper hull of the (strong share, quality) points anchored at the weak model (0, q_W), as
for APGR: mixing two operating points at random mixes their shares and qualities linearly. None when
the router never gets there. `cost_to_pgr` is the same on the (cost, quality) hull, in USD per query.

**Quality at a budget**: Q̃(c) of the (cost, quality) hull, e.g. at 20 % of the strong model's cost.

**Pareto frontier**: the points no other point beats on both axes (lower or equal cost and higher or
equal quality, one of them strictly)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not len(p):
        raise ValueError("no points")
    if not np.isfinite(p).all():
        raise ValueError("points must be finite")
    return p


def pareto_frontier(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (minimise cost, maximise quality), in increasing cost."""
    p = as_points(points)
    order = np.lexsort((-p[:, 1], p[:, 0]))  # by cost, then best quality first
    keep: list[int] = []
    best = -np.inf
    for i in order:
        if p[i, 1] > best:
            keep.append(int(i))
            best = p[i, 1]
    return np.array(keep, dtype=np.int64)


def hull_curve(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Vertices (k, 2) of the non-decreasing upper convex hull, in increasing cost (RouterBench)."""
    p = as_points(points)
    p = p[pareto_frontier(p)]  # dominated points never lie on the non-decreasing hull
    hull: list[np.ndarray] = []
    for pt in p:  # Andrew's monotone chain, upper part
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point unless it lies strictly above the chord from hull[-2] to pt
            if (x2 - x1) * (pt[1] - y1) - (y2 - y1) * (pt[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(pt)
    return np.array(hull)


def budget_quality(curve: np.ndarray, costs: np.ndarray | float) -> np.ndarray:
    """Q̃(c): the hull `curve` (from hull_curve) at `costs`, extended flat on both sides."""
    return np.interp(np.asarray(costs, dtype=np.float64), curve[:, 0], curve[:, 1])


def _integrate(
    curve: np.ndarray, lo: float, hi: float, transform: tuple[float, float] | None = None
) -> float:
    """Mean over [lo, hi] of the piecewise-linear curve, optionally of a + b·Q̃ clipped to [0, 1]."""
    if hi <= lo:
        y = float(budget_quality(curve, lo))
        if transform is not None:
            y = min(1.0, max(0.0, transform[0] + transform[1] * y))
        return y
    xs = [lo, hi] + [x for x in curve[:, 0] if lo < x < hi]
    xs_arr = np.unique(np.array(xs))
    ys = budget_quality(curve, xs_arr)
    if transform is not None:
        a, b = transform
        ys = a + b * ys
        # add the points where a segment crosses the clip levels, so clipping stays exact
        extra = []
        for level in (0.0, 1.0):
            d = ys - level
            cross = np.flatnonzero(d[:-1] * d[1:] < 0)
            for i in cross:
                t = d[i] / (d[i] - d[i + 1])
                extra.append(xs_arr[i] + t * (xs_arr[i + 1] - xs_arr[i]))
        if extra:
            xs_arr = np.unique(np.concatenate([xs_arr, extra]))
            ys = a + b * budget_quality(curve, xs_arr)
        ys = np.clip(ys, 0.0, 1.0)
    area = float(np.sum((ys[1:] + ys[:-1]) * np.diff(xs_arr)) / 2)
    return area / (hi - lo)


def _anchored(
    points: Sequence[Sequence[float]] | np.ndarray, anchor: tuple[float, float] | None
) -> np.ndarray:
    p = as_points(points)
    return p if anchor is None else np.vstack([p, np.asarray(anchor, dtype=np.float64)[None, :]])


def aiq(
    points: Sequence[Sequence[float]] | np.ndarray,
    c_lo: float,
    c_hi: float,
    *,
    anchor: tuple[float, float] | None = None,
) -> float:
    """Average Improvement in Quality over [c_lo, c_hi] of the hull of `points` (plus `anchor`, the weak
    model's (cost, quality), when given; see the module docstring)."""
    return _integrate(hull_curve(_anchored(points, anchor)), c_lo, c_hi)


def apgr(
    points: Sequence[Sequence[float]] | np.ndarray, *, weak: tuple[float, float], strong: tuple[float, float]
) -> float:
    """Average Performance Gap Recovered between `weak` = (c_W, q_W) and `strong` = (c_S, q_S); NaN when the
    strong model is no better than the weak one (there is no gap to recover)."""
    (c_w, q_w), (c_s, q_s) = weak, strong
    if q_s <= q_w:
        return float("nan")
    lo, hi = min(c_w, c_s), max(c_w, c_s)
    return _integrate(
        hull_curve(_anchored(points, weak)), lo, hi, transform=(-q_w / (q_s - q_w), 1.0 / (q_s - q_w))
    )


def share_to_reach(qualities: Sequence[float], shares: Sequence[float], target: float) -> float | None:
    """The smallest `shares[i]` among points with qualities[i] >= target (None if none)."""
    q = np.asarray(qualities, dtype=np.float64)
    s = np.asarray(shares, dtype=np.float64)
    ok = q >= target - 1e-12
    return float(s[ok].min()) if ok.any() else None


def random_mix(weak: tuple[float, float], strong: tuple[float, float], steps: int = 11) -> np.ndarray:
    """The random router: send a fraction t of the queries to the strong model, t in [0, 1]."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return (1 - t) * np.asarray(weak, dtype=np.float64) + t * np.asarray(strong, dtype=np.float64)


def _first_reach(curve: np.ndarray, target: float) -> float | None:
    """The smallest x at which the non-decreasing piecewise-linear `curve` reaches `target`."""
    if curve[-1, 1] < target - 1e-12:
        return None
    if curve[0, 1] >= target - 1e-12:
        return float(curve[0, 0])
    for (x1, y1), (x2, y2) in zip(curve[:-1], curve[1:], strict=True):
        if y2 >= target - 1e-12:
            return float(x1 + (target - y1) / (y2 - y1) * (x2 - x1)) if y2 > y1 else float(x2)
    return None  # pragma: no cover - the first test covers it


def cpt(
    shares: Sequence[float], qualities: Sequence[float], q_weak: float, q_strong: float, x: float
) -> float | None:
    """RouteLLM's CPT(x): the smallest strong-model call share reaching PGR >= x (x in [0, 1]) on the
    hull of the (share, quality) points anchored at (0, q_weak); None if never reached or no gap."""
    if q_strong <= q_weak:
        return None
    pts = np.column_stack([np.asarray(shares, np.float64), np.asarray(qualities, np.float64)])
    curve = hull_curve(_anchored(pts, (0.0, q_weak)))
    return _first_reach(curve, q_weak + x * (q_strong - q_weak))


def cost_to_pgr(
    points: Sequence[Sequence[float]] | np.ndarray,
    *,
    weak: tuple[float, float],
    strong: tuple[float, float],
    x: float,
) -> float | None:
    """The smallest average cost (USD per query) at which the (cost, quality) hull reaches PGR >= x."""
    (_, q_w), (_, q_s) = weak, strong
    if q_s <= q_w:
        return None
    curve = hull_curve(_anchored(points, weak))
    return _first_reach(curve, q_w + x * (q_s - q_w))


def quality_at_cost(
    points: Sequence[Sequence[float]] | np.ndarray, cost: float, *, anchor: tuple[float, float] | None = None
) -> float:
    """Q̃(cost): the best average quality reachable within an average budget of `cost` per query."""
    return float(budget_quality(hull_curve(_anchored(points, anchor)), cost))
