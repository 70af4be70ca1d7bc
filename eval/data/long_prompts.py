"""Long prompts built from the shared data: a question with a pasted code block, to measure how the
router reads long prompts (router/text.py) and to build the small committed test sample.

Each row pairs a question from a non-HumanEval source (its label from eval/data/label_map.yaml) with one
HumanEval problem (prompt + canonical solution: a real pasted function) and gives four layouts:
question then code, and code then question, each with the code in a fence and pasted as it is (no
fences, as many people paste). A question that names its subject confidently must keep its category
whatever code is pasted with it (one read as `chat`, naming none, is read by the code in the service).

The mirror case: a vague instruction above pasted code. `vague_rows` pairs MT-Bench's coding follow-up
turns (its second turns, "Can you parallelize it?", "Does there exist an implementation with better
time complexity?": real requests that name no topic) with the same pasted functions; those prompts are
coding requests, and should reach the code expert rather than the generalist. Nothing here is written
by hand.

    python -m eval.data.long_prompts --data ../shared/data --measure --cache /tmp/router-cache
    python -m eval.data.long_prompts --data ../shared/data --sample tests/router/data/long_prompts.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.data.datasets import Example

REDISTRIBUTABLE = ("mmlu_pro", "gsm8k", "mt_bench", "vicuna")


def humaneval_code(data: Path) -> list[tuple[str, str]]:
    with gzip.open(data / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [(r["task_id"], (r["prompt"] + r["canonical_solution"]).strip("\n")) for r in rows]


#: the layouts of a question with pasted code: fenced, and pasted as it is (no fences, as many people paste)
LAYOUTS = ("question_first", "code_first", "question_first_unfenced", "code_first_unfenced")


def layouts(question: str, code: str) -> dict[str, str]:
    block = f"```python\n{code}\n```"
    return {
        "bare": question,
        "question_first": f"{question}\n\n{block}",
        "code_first": f"{block}\n\n{question}",
        "question_first_unfenced": f"{question}\n\n{code}",
        "code_first_unfenced": f"{code}\n\n{question}",
    }


def build(
    examples: Sequence[Example], code: Sequence[tuple[str, str]], n: int, seed: int = 0
) -> list[dict[str, Any]]:
    """n rows, spread over the sources other than humaneval, each question paired with a random snippet."""
    rng = random.Random(seed)
    pool = [e for e in examples if e.source != "humaneval"]
    by_source: dict[str, list[Example]] = {}
    for e in pool:
        by_source.setdefault(e.source, []).append(e)
    picked: list[Example] = []
    sources = sorted(by_source)
    while len(picked) < n and any(by_source.values()):
        for s in sources:
            if by_source[s] and len(picked) < n:
                picked.append(by_source[s].pop(rng.randrange(len(by_source[s]))))
    rows = []
    for e in picked:
        task, snippet = code[rng.randrange(len(code))]
        rows.append(
            {"id": e.id, "source": e.source, "label": e.label, "code_from": task, **layouts(e.text, snippet)}
        )
    return rows


def vague_rows(data: Path, code: Sequence[tuple[str, str]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n prompts: an MT-Bench coding second turn (a follow-up that names no topic) with a pasted
    HumanEval function, in each of the LAYOUTS in turn (instruction or code first, fenced or not);
    label `coding`."""
    rng = random.Random(seed)
    with (data / "mt_bench" / "mt_bench_question.jsonl").open(encoding="utf-8") as fh:
        qs = [json.loads(line) for line in fh if line.strip()]
    turns = [
        (str(q["question_id"]), q["turns"][1])
        for q in qs
        if q["category"] == "coding" and len(q["turns"]) > 1
    ]
    rows = []
    for k in range(n):
        qid, turn = turns[k % len(turns)]
        task, snippet = code[rng.randrange(len(code))]
        view = layouts(turn, snippet)
        layout = LAYOUTS[k % len(LAYOUTS)]
        rows.append(
            {
                "id": f"mt_bench:{qid}:2",
                "label": "coding",
                "code_from": task,
                "layout": layout,
                "text": view[layout],
            }
        )
    return rows


def measure_vague(
    rows: Sequence[dict[str, Any]],
    probabilities: Callable[[list[str]], np.ndarray],
    categories: Sequence[str],
    threshold: float,
    code_experts: frozenset[str] = frozenset({"coding", "computer science"}),
) -> dict[str, float]:
    """Share of the vague prompts classified `coding`, routed to a category the code expert owns
    (coding, computer science in the seeded registry), and below the fallback threshold."""
    probs = probabilities([r["text"] for r in rows])
    top = [categories[int(p.argmax())] for p in probs]
    out = {
        "coding": float(np.mean([t == "coding" for t in top])),
        "code_expert": float(
            np.mean([t in code_experts and p.max() >= threshold for t, p in zip(top, probs, strict=True)])
        ),
        "fallback": float(np.mean([p.max() < threshold for p in probs])),
    }
    return {k: round(v, 4) for k, v in out.items()}


def measure(
    rows: Sequence[dict[str, Any]], classify: Callable[[list[str]], list[str]], view: Callable[[str], str]
) -> dict[str, float]:
    """Share of rows whose category with a pasted block equals the bare question's, per layout: of all
    rows, and of the rows whose bare question names a subject (its category is not one of
    TOPICLESS_CATEGORIES: the service reads the pasted code of the others, router/core.py)."""
    from router.defaults import TOPICLESS_CATEGORIES

    bare = classify([view(r["bare"]) for r in rows])
    topical = [b not in TOPICLESS_CATEGORIES for b in bare]
    out = {"bare_accuracy": float(np.mean([p == r["label"] for p, r in zip(bare, rows, strict=True)]))}
    out["bare_topical"] = float(np.mean(topical))
    for layout in LAYOUTS:
        pred = classify([view(r[layout]) for r in rows])
        same = [a == b for a, b in zip(pred, bare, strict=True)]
        out[f"{layout}_same_as_bare"] = float(np.mean(same))
        out[f"{layout}_same_as_bare_topical"] = float(
            np.mean([s for s, t in zip(same, topical, strict=True) if t])
        )
        out[f"{layout}_accuracy"] = float(np.mean([p == r["label"] for p, r in zip(pred, rows, strict=True)]))
        out[f"{layout}_coding"] = float(np.mean([p == "coding" for p in pred]))
    return {k: round(v, 4) for k, v in out.items()}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--router", type=Path, default=None)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=Path, help="write this many rows (--n) as JSONL here")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--cache", type=Path)
    args = ap.parse_args(argv)
    from eval.data.mix import load_mix

    code = humaneval_code(args.data)
    if args.sample:
        # only sources whose licences allow copies in the repository (MIT / Apache-2.0: SOURCES.md)
        mix = load_mix(args.data, sources=REDISTRIBUTABLE, seed=args.seed)
        sample = build(mix, code, args.n, args.seed)
        args.sample.parent.mkdir(parents=True, exist_ok=True)
        args.sample.write_text("".join(json.dumps(r) + "\n" for r in sample), encoding="utf-8")
    rows = build(load_mix(args.data, seed=args.seed), code, args.n, args.seed)
    if args.measure:
        print(json.dumps(_measure(args, rows, code), indent=2))


def _measure(
    args: argparse.Namespace, rows: list[dict[str, Any]], code: list[tuple[str, str]]
) -> dict[str, Any]:
    """The committed figures of docs/router.md: each reading of the pasted-code prompts, and the vague
    follow-ups with the service's reading (`Router.probabilities`, which reads the code when the
    instruction is below the threshold) against the instruction alone."""
    from eval.training.embedding import CachedEmbedder
    from router.classifier import load_artifact
    from router.core import Router, artifact_embedder
    from router.defaults import DEFAULT_ROUTER_ARTIFACT, DEFAULT_THRESHOLD
    from router.text import routing_text

    clf = load_artifact(args.router or DEFAULT_ROUTER_ARTIFACT)
    emb: Any = artifact_embedder(args.router or DEFAULT_ROUTER_ARTIFACT)  # its own (tuned) encoder
    if args.cache:
        emb = CachedEmbedder(emb, args.cache)
    router = Router(clf, emb)
    threshold = router.threshold if router.threshold is not None else DEFAULT_THRESHOLD

    def classify(texts: list[str]) -> list[str]:
        return clf.predict(texts, emb.embed(texts))

    def service(texts: list[str]) -> list[str]:
        return [clf.categories[int(p.argmax())] for p in router.probabilities(texts)]

    def instruction_only(texts: list[str]) -> np.ndarray:
        views = [routing_text(t) for t in texts]
        return clf.predict_proba(views, emb.embed(views))

    vague = vague_rows(args.data, code, args.n, args.seed)
    result = {
        "router": clf.version,
        "n": len(rows),
        "raw_text": measure(rows, classify, lambda t: t),
        "routing_text": measure(rows, classify, routing_text),
        "service": measure(rows, service, lambda t: t),
        "vague_followups": {
            "n": len(vague),
            "threshold": threshold,
            "instruction_only": measure_vague(vague, instruction_only, clf.categories, threshold),
            "service": measure_vague(vague, router.probabilities, clf.categories, threshold),
        },
    }
    if args.cache:
        emb.flush()
    return result


if __name__ == "__main__":
    main()
