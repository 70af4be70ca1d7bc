"""Two router artifacts side by side on the eval-only sets of eval/data/label_map.yaml (never trained on by
the
bundled artifact; AlpacaEval left out, since older artifacts were trained on it): the share of prompts,
per intent label, that `Router.route` sends to the expert the label's category maps to in a registry
seeded as `coe up` seeds it (the NEW artifact's seed decides the expected expert for both).

    .venv/bin/python scripts/compare_artifacts.py OLD_ARTIFACT NEW_ARTIFACT [--data ../shared/data]

At most 400 prompts per source (seeded sample)."""

from __future__ import annotations

import argparse
import collections
import random
import tempfile
from pathlib import Path

from eval.data.mix import eval_only, load_mix
from eval.training.seed import seed
from registry import Registry
from router.core import Router
from router.types import RoutingOptions

PER_SOURCE = 400


def _seeded(artifact: Path) -> Registry:
    registry = Registry(f"sqlite:///{tempfile.mkdtemp()}/r.db")
    seed(registry, artifact, "http://127.0.0.1:9/v1")
    return registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    sources = eval_only() - {"alpaca_eval"}
    by_source: dict[str, list] = collections.defaultdict(list)
    for example in load_mix(args.data, with_eval_only=True):
        if example.source in sources:
            by_source[example.source].append(example)
    rnd = random.Random(0)
    examples = [
        e
        for _, rows in sorted(by_source.items())
        for e in (rnd.sample(rows, PER_SOURCE) if len(rows) > PER_SOURCE else rows)
    ]
    print({s: min(len(r), PER_SOURCE) for s, r in sorted(by_source.items())}, flush=True)
    expected = {c: xs[0] for c, xs in _seeded(args.new).snapshot().category_experts.items()}
    for name, artifact in (("old", args.old), ("new", args.new)):
        snapshot = _seeded(artifact).snapshot()
        router = Router.load(artifact)
        right: collections.Counter[str] = collections.Counter()
        total: collections.Counter[str] = collections.Counter()
        for e in examples:
            decision = router.route([e.text], snapshot, {}, RoutingOptions())[0]
            total[e.label] += 1
            right[e.label] += decision.experts[0].name == expected.get(e.label, "local-general")
        shares = {label: f"{right[label] / total[label]:.3f} (n={total[label]})" for label in sorted(total)}
        print(name, router.version, shares, "all", round(sum(right.values()) / sum(total.values()), 3))


if __name__ == "__main__":
    main()
