"""Classification eval of a router artifact: metrics, calibration, latency, baselines and plots.

Baselines run in the same job on the same texts: majority class, TF-IDF + logistic regression, and kNN over
the router's own embeddings. They are fitted on `baseline_train` when given (the fair comparison: the
router's training data); otherwise by 5-fold cross-validation on the eval set itself (in-distribution,
which favours them; the JSON says which)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.data.datasets import Example

ECE_BINS = 15


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins, and the per-bin table for the reliability plot."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece, table = 0.0, []
    n = max(len(confidence), 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        if not mask.any():
            continue
        conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
        ece += mask.sum() / n * abs(acc - conf)
        table.append(
            {"lo": float(lo), "hi": float(hi), "n": int(mask.sum()), "confidence": conf, "accuracy": acc}
        )
    return float(ece), table


def label_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the labels present in y_true), per-category precision/recall."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    labels = sorted(set(y_true))
    y_true, y_pred = list(y_true), list(y_pred)
    acc = float(np.mean([a == b for a, b in zip(y_true, y_pred, strict=True)])) if y_true else 0.0
    f1 = float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per = {
        c: {
            "precision": round(float(p[i]), 4),
            "recall": round(float(r[i]), 4),
            "f1": round(float(f[i]), 4),
            "support": int(s[i]),
        }
        for i, c in enumerate(labels)
    }
    return {"n": len(y_true), "accuracy": round(acc, 4), "macro_f1": round(f1, 4), "per_category": per}


def classification_metrics(
    y_true: Sequence[str], probs: np.ndarray, categories: Sequence[str]
) -> dict[str, Any]:
    cats = list(categories)
    pred_idx = probs.argmax(axis=1)
    y_pred = [cats[i] for i in pred_idx]
    m = label_metrics(y_true, y_pred)
    correct = np.array([a == b for a, b in zip(y_true, y_pred, strict=True)], dtype=float)
    ece, table = expected_calibration_error(probs.max(axis=1), correct)
    labels = sorted(set(y_true) | set(cats))
    li = {c: i for i, c in enumerate(labels)}
    conf = np.zeros((len(labels), len(labels)), dtype=int)
    for a, b in zip(y_true, y_pred, strict=True):
        conf[li[a], li[b]] += 1
    m.update(
        {"ece": round(ece, 4), "reliability": table, "confusion": {"labels": labels, "matrix": conf.tolist()}}
    )
    return m


# --- baselines -----------------------------------------------------------------------------------------
def tfidf_lr_predict(
    train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str], C: float = 10.0
) -> list[str]:
    """The lexical baseline: word 1–2-gram TF-IDF (sublinear) + multinomial logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2 if len(train_texts) >= 200 else 1)
    x = vec.fit_transform(list(train_texts))
    clf = LogisticRegression(C=C, max_iter=2000).fit(x, list(train_labels))
    return [str(v) for v in clf.predict(vec.transform(list(test_texts)))]


def embedding_lr_predict(
    train_emb: np.ndarray, train_labels: Sequence[str], test_emb: np.ndarray, C: float = 4.0
) -> list[str]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=2000).fit(train_emb, list(train_labels))
    return [str(v) for v in clf.predict(test_emb)]


def knn_predict(
    train_emb: np.ndarray, train_labels: Sequence[str], test_emb: np.ndarray, k: int = 15
) -> list[str]:
    """Cosine kNN (embeddings are L2-normalised), distance-weighted vote."""
    labels = np.asarray(list(train_labels))
    k = max(1, min(k, len(labels)))
    out = []
    for start in range(0, len(test_emb), 1024):
        sims = test_emb[start : start + 1024] @ train_emb.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, idx in enumerate(top):
            votes: dict[str, float] = {}
            for j in idx:
                label = str(labels[j])
                votes[label] = votes.get(label, 0.0) + float(sims[row, j]) + 1.0
            out.append(max(votes, key=votes.__getitem__))
    return out


def majority_predict(train_labels: Sequence[str], n: int) -> list[str]:
    return [Counter(train_labels).most_common(1)[0][0]] * n


def baselines(
    test_texts: Sequence[str],
    test_labels: Sequence[str],
    test_emb: np.ndarray | None,
    *,
    train_texts: Sequence[str] | None = None,
    train_labels: Sequence[str] | None = None,
    train_emb: np.ndarray | None = None,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Majority, TF-IDF+LR and embedding kNN/LR; fitted on the given training data or by k-fold CV."""
    names = ["majority", "tfidf_lr"] + (["knn", "embedding_lr"] if test_emb is not None else [])
    preds: dict[str, list[str]] = {}
    if train_texts is not None and train_labels is not None:
        mode = "train_data"
        preds["majority"] = majority_predict(train_labels, len(test_texts))
        preds["tfidf_lr"] = tfidf_lr_predict(train_texts, train_labels, test_texts)
        if test_emb is not None and train_emb is not None:
            preds["knn"] = knn_predict(train_emb, train_labels, test_emb)
            preds["embedding_lr"] = embedding_lr_predict(train_emb, train_labels, test_emb)
    else:
        mode = f"{folds}-fold cross-validation on the eval set"
        from sklearn.model_selection import KFold

        texts, labels = list(test_texts), np.asarray(list(test_labels))
        folds = max(2, min(folds, len(texts)))
        preds = {n: [""] * len(texts) for n in names}
        for tr, te in KFold(folds, shuffle=True, random_state=seed).split(texts):
            tr_l = labels[tr].tolist()
            fold = {"majority": majority_predict(tr_l, len(te))}
            if len(set(tr_l)) > 1:
                fold["tfidf_lr"] = tfidf_lr_predict([texts[i] for i in tr], tr_l, [texts[i] for i in te])
            else:
                fold["tfidf_lr"] = fold["majority"]
            if test_emb is not None:
                fold["knn"] = knn_predict(test_emb[tr], tr_l, test_emb[te])
                fold["embedding_lr"] = (
                    embedding_lr_predict(test_emb[tr], tr_l, test_emb[te])
                    if len(set(tr_l)) > 1
                    else fold["majority"]
                )
            for n, p in fold.items():
                for i, v in zip(te, p, strict=True):
                    preds[n][i] = v
    out: dict[str, Any] = {"fitted_on": mode}
    for n, p in preds.items():
        m = label_metrics(test_labels, p)
        out[n] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return out


# --- plots ---------------------------------------------------------------------------------------------
def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_confusion(
    confusion: dict[str, Any],
    path: Path,
    title: str = "Confusion matrix",
    *,
    what: str = "",
    colorbar: bool = False,
) -> None:
    """A confusion matrix ({"labels", "matrix"}) as a heat map of row shares, counts written in; `what`
    names the axes ("predicted category"), `colorbar` adds the share scale."""
    plt = pyplot()

    labels, mat = confusion["labels"], np.asarray(confusion["matrix"], dtype=float)
    norm = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + colorbar, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if mat[i, j]:
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(mat[i, j])), ha="center", va="center", fontsize=6, color=color)
    ax.set_xlabel(f"predicted {what}".strip())
    ax.set_ylabel(f"true {what}".strip())
    ax.set_title(title)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"share of the true {what or 'label'}")
    save_figure(fig, path)


def plot_reliability(table: Sequence[dict[str, float]], ece: float, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    if table:
        centers = [(b["lo"] + b["hi"]) / 2 for b in table]
        width = table[0]["hi"] - table[0]["lo"]
        ax.bar(centers, [b["accuracy"] for b in table], width=width * 0.9, alpha=0.7, label="accuracy")
        ax.plot(
            [b["confidence"] for b in table],
            [b["accuracy"] for b in table],
            "o-",
            color="C1",
            label="accuracy vs mean confidence",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max P)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE = {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


# --- the eval job --------------------------------------------------------------------------------------
def latency_ms(router: Any, texts: Sequence[str], n: int = 100) -> dict[str, float]:
    """Single-query embed+classify latency over the first n texts (after one warm-up call)."""
    sample = list(texts[:n])
    if not sample:
        return {"p50": 0.0, "p99": 0.0, "n": 0}
    router.probabilities(sample[:1])
    times = []
    for t in sample:
        t0 = time.perf_counter()
        router.probabilities([t])
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "p50": round(float(np.percentile(times, 50)), 3),
        "p99": round(float(np.percentile(times, 99)), 3),
        "n": len(times),
    }


def evaluate_router(
    router: Any,
    examples: Sequence[Example],
    *,
    baseline_train: Sequence[Example] | None = None,
    report_dir: Path | None = None,
    latency_n: int = 100,
    batch: int = 256,
    show_progress: bool = True,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from router.text import routing_text

    # what the service classifies (router/core.py reads long prompts the same way)
    texts, labels = [routing_text(e.text) for e in examples], [e.label for e in examples]
    probs_parts, emb_parts = [], []
    needs_emb = router.embedder is not None
    with tqdm(total=len(texts), desc="routing", unit="text", disable=not show_progress, leave=False) as bar:
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            emb = router.embedder.embed(chunk) if needs_emb else None
            probs_parts.append(router.classifier.predict_proba(chunk, emb))
            if emb is not None:
                emb_parts.append(emb)
            bar.update(len(chunk))
    probs = np.vstack(probs_parts)
    emb_all = np.vstack(emb_parts) if emb_parts else None
    m = classification_metrics(labels, probs, router.categories)
    unknown = sorted(set(labels) - set(router.categories))
    bl_kw: dict[str, Any] = {}
    if baseline_train:
        bl_kw = {
            "train_texts": [e.text for e in baseline_train],
            "train_labels": [e.label for e in baseline_train],
        }
        if emb_all is not None:
            bl_kw["train_emb"] = router.embedder.embed(bl_kw["train_texts"])
    result: dict[str, Any] = {
        "router_version": router.version,
        "n": m["n"],
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "ece": m["ece"],
        "per_category": m["per_category"],
        "confusion": m["confusion"],
        "reliability": m["reliability"],
        "labels_unknown_to_router": unknown,
        "latency_ms": latency_ms(router, texts, latency_n),
        "baselines": baselines(texts, labels, emb_all, **bl_kw),
    }
    if report_dir is not None:
        write_report(result, Path(report_dir))
    return result


def write_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_confusion(result["confusion"], out / "confusion.png", f"Router {result['router_version']}")
    plot_reliability(result["reliability"], result["ece"], out / "reliability.png")
    bl = result["baselines"]
    lines = [
        f"# Router evaluation: {result['router_version']}",
        "",
        f"{result['n']} examples. Baselines fitted on: {bl['fitted_on']}.",
        "",
        "| model | accuracy | macro-F1 |",
        "|---|---|---|",
        f"| router | {result['accuracy']:.4f} | {result['macro_f1']:.4f} |",
    ]
    lines += [
        f"| {n} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} |" for n, v in bl.items() if isinstance(v, dict)
    ]
    lines += [
        "",
        f"ECE {result['ece']:.4f}; single-query latency p50 {result['latency_ms']['p50']} ms, "
        f"p99 {result['latency_ms']['p99']} ms.",
        "",
        "| category | precision | recall | support |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |"
        for c, v in result["per_category"].items()
    ]
    lines += ["", "![confusion](confusion.png)", "", "![reliability](reliability.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
