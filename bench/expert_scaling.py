"""How policy decision time grows with the registry: 10, 100 and 1,000 experts (and 14 vs 100 categories).

Baseline in the same run: the 10-expert, 14-category registry; every other cell is reported as a ratio
to it. Measures `Policy.decide` only (the embedder cost does not depend on the registry; see
routing_overhead.py for that). Probabilities are random Dirichlet draws so every category gets traffic.

    .venv/bin/python bench/expert_scaling.py [--decisions 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import machine, pct, table, write  # noqa: E402
from router.policies import get_policy  # noqa: E402
from router.types import ExpertInfo, ExpertLoad, RegistrySnapshot, RoutingOptions  # noqa: E402

POLICIES = ("category", "top_k", "top_p", "cost_aware")


def snapshot(n_experts: int, n_categories: int, rng: np.random.Generator) -> RegistrySnapshot:
    cats = [f"c{i}" for i in range(n_categories)]
    experts = {
        f"e{i}": ExpertInfo(
            name=f"e{i}",
            base_url="http://127.0.0.1:9/v1",
            model=f"m{i}",
            cost_input_per_m=float(rng.uniform(0.1, 10)),
            cost_output_per_m=float(rng.uniform(0.1, 30)),
            tags=("generalist",) if i == 0 else (),
        )
        for i in range(n_experts)
    }
    names = list(experts)
    # each category ranks 5 experts; every expert has skill scores on every category (dense profiles)
    cmap = {c: tuple(rng.choice(names, size=min(5, n_experts), replace=False)) for c in cats}
    skills = {e: {c: float(rng.uniform(0.2, 0.9)) for c in cats} for e in names}
    return RegistrySnapshot(revision=1, experts=experts, category_experts=cmap, skills=skills)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cells = [(10, 14), (100, 14), (1000, 14), (100, 100), (1000, 100)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for n_e, n_c in cells:
        snap = snapshot(n_e, n_c, rng)
        cats = sorted(snap.category_experts)
        load = {e: ExpertLoad(in_flight=int(rng.integers(0, 4))) for e in snap.experts}
        probs_all = rng.dirichlet(np.full(n_c, 0.3), size=args.decisions)
        key = f"{n_e} experts x {n_c} categories"
        results[key] = {}
        for name in POLICIES:
            policy = get_policy(name)
            opts = RoutingOptions(policy=name, k=3, max_experts=3, threshold=0.2)
            samples = []
            for row in probs_all:
                probs = sorted(zip(cats, row.tolist(), strict=True), key=lambda t: -t[1])
                t0 = time.perf_counter()
                policy.decide(probs, snap, load, opts)
                samples.append(time.perf_counter() - t0)
            results[key][name] = {"p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99)}
    base = results["10 experts x 14 categories"]
    rows = []
    for key, per in results.items():
        for name, r in per.items():
            rows.append([key, name, r["p50_ms"], r["p99_ms"], r["p50_ms"] / base[name]["p50_ms"]])
    print(table(["registry", "policy", "p50 ms", "p99 ms", "p50 / 10x14"], rows))
    path = write("expert_scaling", {"machine": machine(), "decisions": args.decisions, "results": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
