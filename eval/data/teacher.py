"""The teacher of the intent labels and the label audit (docs/router.md, "Labels by intent").

`python -m eval.data.teacher --data ../shared/data [--cache DIR]` fits the `coe router train` recipe
(un-nested) on the clearly-labelled sources and writes its calls on the rows of the `teacher: true` sources
that no rule claims to eval/data/intent_labels.yaml;
`--audit N` prints N random final labels to read by eye."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.data.intents import INTENT_LABELS, rule_intent

#: the sources whose rows carry a reviewed or single-intent label: the teacher learns from these
TEACHER_SOURCES = (
    "mmlu_pro", "gsm8k", "humaneval_nl", "mt_bench", "vicuna", "arena_hard", "ifeval", "math500",
    "gsm8k_test", "awesome_chatgpt",
)  # fmt: skip


def teacher_calls(data: Path, cache: str | None, max_per_source: int = 1500) -> dict[str, dict[str, Any]]:
    """source -> id -> [intent, P] for every row of a `teacher: true` source that no rule claims: the
    `coe router train` recipe (un-nested) fitted on TEACHER_SOURCES (seeded sample of at most
    `max_per_source` rows each)."""
    from eval.data.datasets import sample
    from eval.data.mix import load_label_map, load_mix, load_source
    from eval.training.embedding import CachedEmbedder
    from eval.training.train import fit_classifier
    from router.embedder import make_embedder
    from router.text import routing_text

    table = load_label_map()
    train = [
        e
        for name in TEACHER_SOURCES
        for e in sample([x for x in load_mix(data, sources=[name])], max_per_source)
    ]
    pending: list[tuple[str, str, str]] = []
    for name, spec in table.items():
        if isinstance(spec.get("intents"), dict) and spec["intents"].get("teacher"):
            bare = {**spec, "intents": {"otherwise": "chat"}}  # every row, before any teacher label
            for e in load_source(name, bare, data):
                if rule_intent(e.text) is None:
                    pending.append((name, e.id.split(":", 1)[1], e.text))
    embedder: Any = make_embedder("default", "torch")
    if cache:
        embedder = CachedEmbedder(embedder, cache)
    texts = [routing_text(e.text) for e in train]
    clf = fit_classifier(
        texts,
        [e.label for e in train],
        embedder=None,
        embeddings=embedder.embed(texts),
        groups=[e.group for e in train],
    )
    todo = [routing_text(t) for _, _, t in pending]
    probs = clf.predict_proba(todo, embedder.embed(todo))
    if cache:
        embedder.flush()
    out: dict[str, dict[str, Any]] = {}
    for (src, rid, _), row in zip(pending, probs, strict=True):
        j = int(row.argmax())
        out.setdefault(src, {})[rid] = [clf.categories[j], round(float(row[j]), 3)]
    return out


def write_intent_labels(calls: Mapping[str, Mapping[str, Any]], path: Path = INTENT_LABELS) -> None:
    lines = [
        "# Teacher calls on the unlabelled real-prompt sources (written by",
        '# `python -m eval.data.teacher --data ../shared/data`; docs/router.md "Labels by intent"):',
        "# source -> row id -> [intent, P] for the rows no rule of eval/data/intents.py claims;",
        "# eval/data/mix.py uses a call when P >= eval.data.intents.TEACHER_MIN_P.",
    ]
    for src in sorted(calls):
        lines.append(f"{src}:")
        for rid, (intent, p) in calls[src].items():
            lines.append(f'  "{rid}": ["{intent}", {p}]')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    """Fit the teacher and write eval/data/intent_labels.yaml; `--audit N` prints N random final labels
    (every source of the label map, seeded) to read by eye instead."""
    import argparse
    import random

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--cache", default=None, help="embedding cache folder")
    ap.add_argument("--audit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.audit:
        from eval.data.mix import load_label_map, load_mix

        table = load_label_map()
        skip = {"mmlu_pro", "gsm8k", "humaneval", "humaneval_nl", "mbpp"}  # labels of their own, unchanged
        rows = [e for e in load_mix(args.data, with_eval_only=True) if e.source not in skip]
        for i, e in enumerate(random.Random(args.seed).sample(rows, args.audit)):
            how = next(k for k in ("label", "labels", "clusters", "intents") if k in table[e.source])
            print(f"{i:3d} {e.source}/{how} -> {e.label} | {' '.join(e.text.split())[:160]}")
        return
    write_intent_labels(teacher_calls(args.data, args.cache))


if __name__ == "__main__":
    main()
