"""Embedder backends: torch (sentence-transformers) vs its ONNX export (fp32) vs that export in int8.

Same process, same artifact (router/artifacts/default), same texts. Texts: the whole held-out MMLU-Pro
split the bundled artifact was trained without (eval.training.train.split over every model-output zip merged,
seed 0, val_fraction 0.1: 1,203 questions, 14 categories), so accuracy is out-of-sample.

Decisions, per backend, over all held-out texts (embedded 32 per call, length-bucketed):
  * top-1 agreement: share of texts whose top category equals the torch backend's;
  * accuracy against the MMLU-Pro category, and its difference to torch in points;
  * cosine of each embedding to torch's (min, mean).
Speed, per backend, `embed()` only (the classifier is the same for all): texts/s at 1 and at 32 texts per
call, --threads threads each (torch.set_num_threads / ORT intra-op threads). The backends take turns
within each of --rounds rounds (order rotated per round) and each figure is the median over rounds, so
load from other jobs falls on all of them alike; ratios are to torch in the same run.

Rule (issue 13): a backend qualifies when its top-1 agreement with torch is >= 99% and its accuracy is
within 0.5 points of torch's; the default is the fastest qualifying one at 1 text per call (the service
embeds most queries alone), torch if none qualifies.

Usage: python bench/embedder_backends.py [--threads 2] [--rounds 3] [--n1 100] [--n32 320]
       [--cache-dir .coe]    (the ONNX exports land in <cache-dir>/onnx/, made on first use)
Writes bench/results/embedder_backends.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, offline_env, table, write  # noqa: E402

AGREEMENT_MIN = 0.99
ACCURACY_POINTS_MAX = 0.5


def held_out() -> tuple[list[str], list[str]]:
    from eval.data.datasets import MMLU_PRO_DIR, load_mmlu_pro
    from eval.training.train import split

    _, val = split(load_mmlu_pro(MMLU_PRO_DIR), 0.1, seed=0)
    return [e.text for e in val], [e.label for e in val]


def throughput(embedder: Any, texts: list[str], per_call: int) -> float:
    calls = [texts[i : i + per_call] for i in range(0, len(texts), per_call)]
    t0 = time.perf_counter()
    for chunk in calls:
        embedder.embed(chunk)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=str(ROOT / "router" / "artifacts" / "default"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n1", type=int, default=100, help="texts timed one per call, per round")
    ap.add_argument("--n32", type=int, default=320, help="texts timed 32 per call, per round")
    ap.add_argument("--cache-dir", default=str(ROOT / ".coe"))
    args = ap.parse_args()
    offline_env()
    import numpy as np

    from router.classifier import load_artifact
    from router.core import artifact_encoder
    from router.embedder import BACKENDS, make_embedder

    info = machine()
    t0 = time.perf_counter()
    texts, labels = held_out()
    load_data_s = time.perf_counter() - t0
    clf = load_artifact(args.artifact)

    embedders: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    for b in BACKENDS:
        t0 = time.perf_counter()
        # the artifact's own encoder (its fine-tuned layers, when it has them: router/tuned_encoder.py)
        embedders[b] = make_embedder(
            "default",
            b,
            threads=args.threads,
            cache_dir=args.cache_dir,
            tuned=artifact_encoder(args.artifact),
        )
        load_s[b] = time.perf_counter() - t0
        print(f"loaded {b} in {load_s[b]:.1f} s", file=sys.stderr)

    # decisions over the whole held-out split
    emb: dict[str, np.ndarray] = {}
    top1: dict[str, np.ndarray] = {}
    for b, e in embedders.items():
        emb[b] = np.vstack([e.embed(texts[i : i + 32]) for i in range(0, len(texts), 32)])
        top1[b] = clf.predict_proba(texts, emb[b]).argmax(axis=1)
    y = np.array([clf.categories.index(label) for label in labels])
    quality: dict[str, dict[str, float]] = {}
    for b in BACKENDS:
        cos = (emb[b] * emb["torch"]).sum(axis=1)
        quality[b] = {
            "agreement": float((top1[b] == top1["torch"]).mean()),
            "accuracy": float((top1[b] == y).mean()),
            "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()),
        }
        quality[b]["accuracy_delta_points"] = 100 * (quality[b]["accuracy"] - quality["torch"]["accuracy"])

    # speed: backends take turns, order rotated per round
    rng = np.random.default_rng(0)
    sample1 = [texts[i] for i in rng.choice(len(texts), args.n1, replace=False)]
    sample32 = [texts[i] for i in rng.choice(len(texts), args.n32, replace=False)]
    for e in embedders.values():  # warm-up: first calls allocate and tune
        e.embed(sample1[:8])
        e.embed(sample32[:32])
    runs: dict[str, dict[str, list[float]]] = {b: {"1": [], "32": []} for b in BACKENDS}
    load_during: list[list[float]] = []
    for r in range(args.rounds):
        order = list(BACKENDS[r % len(BACKENDS) :] + BACKENDS[: r % len(BACKENDS)])
        for b in order:
            runs[b]["1"].append(throughput(embedders[b], sample1, 1))
            runs[b]["32"].append(throughput(embedders[b], sample32, 32))
        load_during.append(list(os.getloadavg()))
        print(f"round {r + 1}/{args.rounds} done, load {load_during[-1][0]:.2f}", file=sys.stderr)
    speed = {b: {k: statistics.median(v) for k, v in runs[b].items()} for b in BACKENDS}

    qualifies = {
        b: quality[b]["agreement"] >= AGREEMENT_MIN
        and abs(quality[b]["accuracy_delta_points"]) <= ACCURACY_POINTS_MAX
        for b in BACKENDS
    }
    chosen = max((b for b in BACKENDS if qualifies[b]), key=lambda b: speed[b]["1"], default="torch")

    rows = []
    for b in BACKENDS:
        q, s = quality[b], speed[b]
        rows.append(
            [
                b,
                f"{100 * q['agreement']:.2f}%",
                f"{100 * q['accuracy']:.2f}",
                f"{q['accuracy_delta_points']:+.2f}",
                f"{q['cosine_min']:.4f} / {q['cosine_mean']:.4f}",
                f"{s['1']:.1f}",
                f"{s['1'] / speed['torch']['1']:.2f}x",
                f"{s['32']:.1f}",
                f"{s['32'] / speed['torch']['32']:.2f}x",
                "yes" if qualifies[b] else "no",
            ]
        )
    headers = [
        "backend",
        "top-1 agreement",
        "accuracy %",
        "Δ points",
        "cosine min / mean",
        "texts/s @1",
        "@1 / torch",
        "texts/s @32",
        "@32 / torch",
        "qualifies",
    ]
    print(
        f"\n{len(texts)} held-out MMLU-Pro texts, {args.threads} threads, median of {args.rounds} rounds "
        f"({args.n1} texts at 1 per call, {args.n32} at 32 per call); load average at start "
        f"{info['loadavg_at_start'][0]:.2f}, during {[round(x[0], 2) for x in load_during]}\n"
    )
    print(table(headers, rows))
    print("\nload (s): " + ", ".join(f"{b} {load_s[b]:.1f}" for b in BACKENDS))
    print(f"default by the rule (agreement >= 99%, |Δ accuracy| <= 0.5 points, fastest at 1): {chosen}")
    path = write(
        "embedder_backends",
        {
            "machine": info,
            "loadavg_during": load_during,
            "loadavg_at_end": list(os.getloadavg()),
            "args": vars(args),
            "n_texts": len(texts),
            "load_data_s": load_data_s,
            "load_s": load_s,
            "quality": quality,
            "speed_texts_per_s": speed,
            "speed_runs": runs,
            "qualifies": qualifies,
            "chosen": chosen,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
