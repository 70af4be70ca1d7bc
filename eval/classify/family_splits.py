"""Cross-family generalisation of the router on MMLU-Pro (the figures in docs/router.md).

Train on the questions of some source families, test on the others, which the router never saw and
which are written differently (ori_mmlu are short exam items; stemez, theoremQA and scibench are
textbook problems):
    A: ori_mmlu -> stemez + theoremQA + scibench
    B: stemez + theoremQA + scibench -> ori_mmlu (restricted to the 9 categories B's training data has)
each tested on the bare question and on the question followed by its lettered options.

    python -m eval.classify.family_splits [--data ../shared/data/mmlu_pro/eval_results/<one>.zip] [--cache
    /tmp/x]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.classify.classification import embedding_lr_predict, knn_predict, label_metrics, tfidf_lr_predict
from eval.data.datasets import MMLU_PRO_DIR, load_mmlu_pro
from eval.training.train import fit_classifier


def _embed(embedder, texts: list[str], cache: Path | None, name: str) -> np.ndarray:
    if cache is not None and (cache / f"{name}.npy").is_file():
        arr = np.load(cache / f"{name}.npy")
        if arr.shape[0] == len(texts):
            return arr
    arr = embedder.embed(texts)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{name}.npy", arr)
    return arr


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(MMLU_PRO_DIR / "model_outputs_Yi-6B_5shots.zip"))
    ap.add_argument("--cache", default=None, help="folder to cache embeddings in")
    args = ap.parse_args(argv)
    from router.embedder import SentenceTransformerEmbedder

    exs = load_mmlu_pro(args.data)
    cache = Path(args.cache) if args.cache else None
    emb = SentenceTransformerEmbedder("default")
    q = [e.text for e in exs]
    qo = [e.with_options_text() for e in exs]
    eq, eqo = _embed(emb, q, cache, "q"), _embed(emb, qo, cache, "qo")
    fam = np.array([e.family for e in exs])
    y = np.array([e.label for e in exs])
    groups = [e.group for e in exs]
    tr_b = np.where(fam != "ori_mmlu")[0]
    seen_b = set(y[tr_b])
    splits = {
        "A ori_mmlu -> others": (np.where(fam == "ori_mmlu")[0], np.where(fam != "ori_mmlu")[0]),
        "B others -> ori_mmlu": (
            tr_b,
            np.array([i for i in np.where(fam == "ori_mmlu")[0] if y[i] in seen_b]),
        ),
    }
    print("| split | test text | n | router (hybrid) | TF-IDF+LR | embedding+LR | kNN (k=15) |")
    print("|---|---|---|---|---|---|---|")
    for name, (tr, te) in splits.items():
        trt, trl = [q[i] for i in tr], y[tr].tolist()
        t0 = time.perf_counter()
        clf = fit_classifier(trt, trl, embedder=None, embeddings=eq[tr], groups=[groups[i] for i in tr])
        fit_s = time.perf_counter() - t0
        for fmt, texts, e in (("question", q, eq), ("question+options", qo, eqo)):
            tt, yt = [texts[i] for i in te], y[te].tolist()
            cells = []
            for pred in (
                clf.predict(tt, e[te]),
                tfidf_lr_predict(trt, trl, tt),
                embedding_lr_predict(eq[tr], trl, e[te]),
                knn_predict(eq[tr], trl, e[te]),
            ):
                m = label_metrics(yt, pred)
                cells.append(f"{m['accuracy']:.3f} / {m['macro_f1']:.3f}")
            print(f"| {name} | {fmt} | {len(te)} | " + " | ".join(cells) + " |", flush=True)
        print(f"<!-- {name}: router fit {fit_s:.0f}s, weights {clf.weights}, T {clf.temperature:.2f} -->")


if __name__ == "__main__":
    main()
