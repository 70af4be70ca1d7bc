"""Reports for a routing evaluation result (`eval.routing.result.RoutingResult`, what
`eval.routing.replay.evaluate_routing` returns):
`index.html` and `report.md` side by side, with PNG plots (matplotlib, Agg backend) in the same folder:

    quality_cost.png      every policy's quality–cost curve and the baselines (log cost axis when the
                          costs span more than a factor of 20)
    confusion.png         the category router's confusion matrix on the test queries
    chosen_models.png     which models each router called, at its default knob
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from eval.classify.classification import plot_confusion as confusion_plot
from eval.classify.classification import pyplot, save_figure
from eval.routing.result import RoutingResult

PLOTS = ("quality_cost.png", "confusion.png", "chosen_models.png")


def _short(name: str, n: int = 28) -> str:
    name = name.rsplit("/", 1)[-1]
    return name if len(name) <= n else name[: n - 1] + "…"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x != 0 and abs(x) < 1e-2:
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x)


def _plot_policies(ax: Any, result: RoutingResult) -> list[float]:
    """Each policy's quality–cost curve (in cost order); returns the costs plotted."""
    costs: list[float] = []
    for name, pol in result.policies.items():
        c = np.array(pol.curve)
        order = np.argsort(c[:, 0], kind="stable")
        ax.plot(
            c[order, 0],
            c[order, 1],
            marker="o",
            ms=3.5,
            lw=1.6,
            label=f"{name} (APGR {_fmt(pol.apgr, 2)}, AIQ {_fmt(pol.aiq, 3)})",
        )
        costs += c[:, 0].tolist()
    return costs


def _plot_baselines(ax: Any, result: RoutingResult) -> None:
    """Random mixing, every single model (annotated), the oracle and the best single model."""
    singles = result.baselines.single
    rnd = np.array(result.baselines.random.curve)
    ax.plot(rnd[:, 0], rnd[:, 1], ls="--", color="grey", lw=1.2, label="random mix weak↔strong (APGR 0.50)")
    ax.scatter(
        [v.cost for v in singles.values()],
        [v.quality for v in singles.values()],
        marker="s",
        color="black",
        s=22,
        zorder=3,
        label="single models",
    )
    for m, v in singles.items():
        ax.annotate(
            _short(m, 22),
            (v.cost, v.quality),
            fontsize=7,
            xytext=(4, -3),
            textcoords="offset points",
            color="dimgray",
        )
    o, b = result.baselines.oracle, result.baselines.best_single
    marks = (
        (o, {"marker": "*", "s": 160, "color": "gold"}, "black", f"oracle (APGR {_fmt(o.apgr, 2)})"),
        (b, {"marker": "D", "s": 60, "facecolor": "none"}, "red", f"best single: {_short(b.model, 22)}"),
    )
    for point, style, edge, label in marks:
        ax.scatter([point.cost], [point.quality], edgecolor=edge, zorder=4, label=label, **style)


def plot_quality_cost(result: RoutingResult, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(13, 6.5), dpi=110)
    singles = result.baselines.single
    costs = [v.cost for v in singles.values()] + _plot_policies(ax, result)
    _plot_baselines(ax, result)
    costs = [c for c in costs + [result.baselines.oracle.cost] if c > 0]
    if costs and max(costs) / min(costs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("average cost per query (USD)")
    ax.set_ylabel("average quality")
    ds = result.dataset
    ax.set_title(
        f"{ds.source}: quality vs cost on {ds.n_test} test queries "
        f"({len(ds.models)} models, {result.config.multi} of chosen answers)"
    )
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    save_figure(fig, path, dpi=fig.dpi)


def plot_confusion(result: RoutingResult, path: Path) -> None:
    clf = result.classifier
    labels = [_short(x, 18) for x in clf.labels]
    title = f"category router ({clf.kind}): accuracy {clf.accuracy:.3f}"
    confusion_plot({"labels": labels, "matrix": clf.confusion}, path, title, what="category", colorbar=True)


def plot_chosen(result: RoutingResult, path: Path) -> None:
    plt = pyplot()

    counts = result.chosen_counts
    routers = list(counts)
    models = result.dataset.models
    used = [m for m in models if any(counts[r].get(m) for r in routers)]
    mat = np.array([[counts[r].get(m, 0) for m in used] for r in routers], dtype=float)
    share = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    # at most 19 named models (distinct colours); the rest share one grey "other" segment
    order = np.argsort(-share.max(axis=0), kind="stable")
    named = sorted(order[:19].tolist()) if len(used) > 20 else list(range(len(used)))
    rest = [j for j in range(len(used)) if j not in named]
    labels = [used[j] for j in named]
    share = np.column_stack([share[:, named]] + ([share[:, rest].sum(axis=1)] if rest else []))
    if rest:
        labels.append(f"other ({len(rest)} models)")
    used = labels
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(routers) + 2.2), dpi=110)
    cmap = plt.get_cmap("tab20")
    left = np.zeros(len(routers))
    for j, m in enumerate(used):
        other = m.startswith("other (")
        ax.barh(
            routers,
            share[:, j],
            left=left,
            color="white" if other else cmap(j % 20),
            edgecolor="black" if other else None,
            hatch="//" if other else None,
            label=_short(m, 30),
        )
        left += share[:, j]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of model calls (default knob of each router)")
    ax.set_title("which models each router called")
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    save_figure(fig, path, dpi=fig.dpi)


Table = tuple[str, list[str], list[list[str]]]  # (title, header, rows)

POLICY_HEADER = [
    "router",
    "APGR",
    "AIQ",
    "CPT(50%)",
    "CPT(80%)",
    "quality at 20% of strong cost",
    "strong share to 95%",
    "cost to 95%",
    "default knob",
    "quality",
    "cost/query",
]


def _policy_table(result: RoutingResult) -> Table:
    """Every policy's summary, then the oracle, the best single model and random mixing."""
    rows = []
    for name, pol in result.policies.items():
        d = pol.default
        rows.append(
            [
                name,
                _fmt(pol.apgr),
                _fmt(pol.aiq),
                _fmt(pol.cpt50),
                _fmt(pol.cpt80),
                _fmt(pol.quality_at_20pct_strong_cost),
                _fmt(pol.strong_share_to_95),
                _fmt(pol.cost_to_95),
                f"{pol.knob}={_fmt(None if d is None else d.knob)}",
                _fmt(None if d is None else d.quality),
                _fmt(None if d is None else d.cost),
            ]
        )
    bl = result.baselines
    for label, v in (
        ("oracle", bl.oracle),
        (f"best single ({_short(bl.best_single.model, 30)})", bl.best_single),
    ):
        rows.append([label, _fmt(v.apgr), _fmt(v.aiq), "", "", "", "", "", "", _fmt(v.quality), _fmt(v.cost)])
    rows.append(["random mix", _fmt(bl.random.apgr), _fmt(bl.random.aiq)] + [""] * 8)
    ref = result.reference
    return f"Policies and baselines (weak = {ref.weak}, strong = {ref.strong})", POLICY_HEADER, rows


def _single_table(result: RoutingResult) -> Table:
    srows = [
        [m, _fmt(v.quality), _fmt(v.cost), _fmt(v.apgr)]
        for m, v in sorted(result.baselines.single.items(), key=lambda kv: kv[1].cost)
    ]
    return "Single models (test part)", ["model", "quality", "cost/query", "APGR"], srows


def _category_table(result: RoutingResult) -> Table:
    cats = result.categories
    routers = list(next(iter(cats.values())).routers) if cats else []
    models = result.dataset.models
    crow = [
        [c, str(e.n)] + [_fmt(e.routers[r].quality) for r in routers] + [_fmt(e.models[m]) for m in models]
        for c, e in cats.items()
    ]
    return (
        "Quality per category (routers at their default knob, then each model)",
        ["category", "n"] + routers + [_short(m, 20) for m in models],
        crow,
    )


def _tables(result: RoutingResult) -> list[Table]:
    """(title, header, rows) for every table of the report."""
    return [_policy_table(result), _single_table(result), _category_table(result)]


def write_report(result: RoutingResult, out_dir: str | Path) -> Path:
    """Write index.html, report.md and the PNGs into `out_dir`; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_quality_cost(result, out / PLOTS[0])
    plot_confusion(result, out / PLOTS[1])
    plot_chosen(result, out / PLOTS[2])
    ds = result.dataset
    intro = (
        f"Source **{ds.source}**: {ds.n_train} training and {ds.n_test} test queries, "
        f"{len(ds.models)} models, {len(ds.categories)} categories. Costs: {ds.cost_note}. "
        f"Multi-expert answers scored as the **{result.config.multi}** of the chosen models' "
        f"quality. Definitions of APGR and AIQ: eval/routing/metrics.py."
    )
    tables = _tables(result)
    captions = {
        "quality_cost.png": "Quality vs cost",
        "confusion.png": "Category router confusion matrix",
        "chosen_models.png": "Chosen-model distribution",
    }
    md = ["# Routing evaluation", "", intro, ""]
    for png in PLOTS:
        md += [f"![{captions[png]}]({png})", ""]
    for title, header, rows in tables:
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows]
        md.append("")
    (out / "report.md").write_text("\n".join(md))

    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Routing evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #eee;margin:0.5em 0}</style></head><body>",
        "<h1>Routing evaluation</h1>",
        "<p>" + esc(intro).replace("**", "") + "</p>",
    ]
    for png in PLOTS:
        parts.append(f"<h2>{esc(captions[png])}</h2><img src='{png}' alt='{esc(captions[png])}'>")
    for title, header, rows in tables:
        parts.append(
            f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts))
    return index
