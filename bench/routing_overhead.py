"""Routing overhead: the router's per-query decision cost vs the raw sentence-transformers encoder
(the floor).

Same texts, same process, same embedder weights. Reports batch-1 latency p50/p99 of
  * floor:  SentenceTransformerEmbedder().embed([text])
  * router: Router.probabilities([text])
            + Router.decide(row, snapshot, load={}, RoutingOptions(policy="category"))
and throughput (texts/s) at 1, 8 and 32 texts per call, plus the router's accuracy on the texts' labels.
Texts: 200 MMLU-Pro questions from the artifact's held-out validation split (eval.train.split, seed 0,
val_fraction 0.1 -- the split the bundled artifact was trained with), so accuracy is out-of-sample.

Usage: python bench/routing_overhead.py [--n 200] [--artifact router/artifacts/default]
Writes bench/results/routing_overhead.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, pct, table, write  # noqa: E402

from router.types import ExpertInfo, RegistrySnapshot, RoutingOptions  # noqa: E402


def snapshot(categories: tuple[str, ...]) -> RegistrySnapshot:
    """Six experts, like the bundled local personas: five specialists plus a generalist."""
    groups = {
        "math": ("math", "physics", "engineering", "chemistry"),
        "code": ("computer science",),
        "medical": ("health", "biology", "psychology"),
        "humanities": ("law", "history", "philosophy", "economics", "business"),
    }
    experts = {f"x-{g}": ExpertInfo(name=f"x-{g}", base_url="http://127.0.0.1:9/v1", model=g) for g in groups}
    experts["x-general"] = ExpertInfo(
        name="x-general", base_url="http://127.0.0.1:9/v1", model="general", tags=("generalist",)
    )
    cmap = {c: tuple(f"x-{g}" for g, cs in groups.items() if c in cs) + ("x-general",) for c in categories}
    return RegistrySnapshot(revision=1, experts=experts, category_experts=cmap)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--artifact", default=str(ROOT / "router" / "artifacts" / "default"))
    ap.add_argument("--budget-s", type=float, default=6.0, help="time cap per throughput cell")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the texts for the batch-1 latency")
    args = ap.parse_args()

    from eval.datasets import load_mmlu_pro
    from eval.train import split
    from router.core import Router
    from router.embedder import SentenceTransformerEmbedder

    t0 = time.perf_counter()
    _, val = split(load_mmlu_pro(), 0.1, 0)
    rng = random.Random(0)
    sample = rng.sample(val, min(args.n, len(val)))
    texts = [e.text for e in sample]
    labels = [e.label for e in sample]
    load_data_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    emb = SentenceTransformerEmbedder()
    load_emb_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    router = Router.load(
        args.artifact, embedder=emb
    )  # same encoder instance: the only difference is the router
    load_router_s = time.perf_counter() - t0
    snap = snapshot(router.categories)
    opts = RoutingOptions(policy="category")

    def floor_call(batch: list[str]) -> None:
        emb.embed(batch)

    def router_call(batch: list[str]) -> list:
        probs = router.probabilities(batch)
        return [router.decide(row, snap, {}, opts) for row in probs]

    for _ in range(3):  # warm-up
        floor_call(texts[:1])
        router_call(texts[:1])
    floor_call(texts[:32])
    router_call(texts[:32])

    # batch-1 latency, interleaved so both see the same background load
    lat = {"encoder": [], "router": []}
    stage = {"embed": [], "classify": [], "decide": []}
    for _ in range(args.repeat):
        for t in texts:
            a = time.perf_counter()
            floor_call([t])
            b = time.perf_counter()
            probs = router.probabilities([t])
            c = time.perf_counter()
            router.decide(probs[0], snap, {}, opts)
            d = time.perf_counter()
            lat["encoder"].append(b - a)
            lat["router"].append(d - b)
            stage["embed"].append(router.last_timings_ms["embed"] / 1000)
            stage["classify"].append(router.last_timings_ms["classify"] / 1000)
            stage["decide"].append(d - c)

    # batched throughput
    thr: dict[str, dict[int, float]] = {"encoder": {}, "router": {}}
    for bs in (1, 8, 32):
        batches = [texts[i : i + bs] for i in range(0, len(texts), bs)]
        for name, fn in (("encoder", floor_call), ("router", router_call)):
            a = time.perf_counter()
            done = 0
            for bt in batches:  # stop early after --budget-s (the VM is shared; keep the run short)
                fn(bt)
                done += len(bt)
                if time.perf_counter() - a > args.budget_s:
                    break
            thr[name][bs] = done / (time.perf_counter() - a)

    # accuracy (top-1 category vs label) and the category policy's decisions
    decisions = []
    correct = 0
    fallback = 0
    for i in range(0, len(texts), 32):
        probs = router.probabilities(texts[i : i + 32])
        for row, lab in zip(probs, labels[i : i + 32], strict=True):
            d = router.decide(row, snap, {}, opts)
            decisions.append(d)
            correct += d.categories[0][0] == lab
            fallback += d.fallback
    acc = correct / len(texts)
    majority = max(labels.count(c) for c in set(labels)) / len(labels)

    lat_rows = []
    for name in ("encoder", "router"):
        lat_rows.append(
            [
                name,
                len(lat[name]),
                pct(lat[name], 50),
                pct(lat[name], 99),
                sum(lat[name]) / len(lat[name]) * 1000,
            ]
        )
    ratio_p50 = pct(lat["router"], 50) / pct(lat["encoder"], 50)
    ratio_p99 = pct(lat["router"], 99) / pct(lat["encoder"], 99)
    print(f"\nRouting overhead -- {len(texts)} held-out MMLU-Pro questions, artifact {router.version}")
    print("\nBatch-1 latency (ms per query)")
    print(table(["path", "n", "p50", "p99", "mean"], lat_rows))
    print(f"router/encoder ratio: p50 {ratio_p50:.3f}x, p99 {ratio_p99:.3f}x")
    print(
        "router stages p50 (ms): embed {:.3f}, classify {:.3f}, decide {:.3f}".format(
            pct(stage["embed"], 50), pct(stage["classify"], 50), pct(stage["decide"], 50)
        )
    )
    print("\nThroughput (texts/s)")
    print(
        table(
            ["batch", "encoder", "router", "router/encoder"],
            [
                [bs, thr["encoder"][bs], thr["router"][bs], thr["router"][bs] / thr["encoder"][bs]]
                for bs in (1, 8, 32)
            ],
        )
    )
    print(
        f"\nRouter top-1 category accuracy: {acc:.3f} (majority class {majority:.3f}); "
        f"generalist fallbacks {fallback}/{len(texts)}"
    )

    out = {
        "benchmark": "routing_overhead",
        "machine": machine(),
        "artifact": {"path": args.artifact, "version": router.version},
        "embedder": emb.name,
        "texts": {
            "source": "mmlu-pro eval_results, held-out val split (seed 0, 0.1), random sample seed 0",
            "n": len(texts),
        },
        "setup_s": {"load_data": load_data_s, "load_embedder": load_emb_s, "load_router": load_router_s},
        "batch1_latency_ms": {
            name: {
                "p50": pct(lat[name], 50),
                "p99": pct(lat[name], 99),
                "mean": sum(lat[name]) / len(lat[name]) * 1000,
                "n": len(lat[name]),
            }
            for name in lat
        },
        "router_stage_p50_ms": {k: pct(v, 50) for k, v in stage.items()},
        "ratio_router_over_encoder": {"p50": ratio_p50, "p99": ratio_p99},
        "throughput_texts_per_s": {name: {str(k): v for k, v in d.items()} for name, d in thr.items()},
        "throughput_ratio_router_over_encoder": {
            str(bs): thr["router"][bs] / thr["encoder"][bs] for bs in (1, 8, 32)
        },
        "accuracy": {
            "top1": acc,
            "majority_class": majority,
            "fallbacks": fallback,
            "policy": "category",
            "threshold": opts.threshold,
        },
    }
    print(f"\nwrote {write('routing_overhead', out)}")


if __name__ == "__main__":
    main()
