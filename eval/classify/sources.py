"""Leave-one-source-out evaluation of the router (`coe eval sources`).

For each source of a mixed training set (Example.source: mmlu_pro, gsm8k, humaneval, ...) a classifier is
fitted, exactly as `coe router train` fits one, on every *other* source and tested on the held-out one.
This answers "how does the router do on a kind of traffic it was not trained on", which an in-distribution
validation split cannot. From the pooled held-out predictions it reports, per source: accuracy (and
accuracy over the rows whose label the training sources have at all), the confusion matrix, and, through
a category -> expert map (the seeded registry's), the share of prompts that reach the right expert and the
fallback rate at each confidence threshold; the threshold that maximises the mean right-expert share over
sources is the one the service should use (it never sees the source it is tested on)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any, cast

import numpy as np

from eval.data.datasets import Example
from eval.training.balance import source_weights
from eval.training.train import ENSEMBLE_WEIGHTS, NESTED_WEIGHT, fit_classifier, inner_categories
from router.classifier import nest, softmax
from router.core import code_to_read, read_code
from router.text import code_text, routing_text
from router.types import expert_confidence

#: the most labels of one source the markdown table lists (MMLU-Pro has 14)
LABEL_ROWS = 6

#: the one fold of the eval-only sources: a model fitted on every training source, tested on all of them
EVAL_ONLY_FOLD = "(eval-only sets)"

#: an intent counts in the threshold's choice when the real-prompt folds hold at least this many of it
MIN_INTENT_N = 20

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 0.95, 0.05))


@dataclass(frozen=True, slots=True)
class HeldOut:
    source: str
    label: str
    pred: str
    confidence: float
    seen: bool  # the label occurs in the training sources of this fold
    #: the embedding weight these predictions used (-1: the fitted model's): of the outer mixture when the
    #: fold's classifier nests the subjects, else of the ensemble
    weight: float = -1.0
    #: every (category, P) of the prediction, best first: the expert's confidence sums the categories
    #: that share the predicted category's expert (router.types.expert_confidence)
    ranked: tuple[tuple[str, float], ...] = ()

    def expert_confidence(self, expert_of: Mapping[str, str]) -> float:
        if not self.ranked:
            return self.confidence
        return expert_confidence(self.ranked, {c: (e,) for c, e in expert_of.items()})


def leave_one_source_out(
    examples: Sequence[Example],
    embed: Callable[[list[str]], np.ndarray],
    *,
    kind: str = "hybrid",
    seed: int = 0,
    test_only: frozenset[str] = frozenset(),
    weights: Sequence[float] = (),
    log: Callable[[str], None] | None = None,
    family: Mapping[str, str] | None = None,
    nest_sources: frozenset[str] = frozenset(),
    fit_weights: tuple[float, float] | None = ENSEMBLE_WEIGHTS,
    nested_weight: float = NESTED_WEIGHT,
    hold_out: frozenset[str] = frozenset(),
    fold_embed: Callable[[list[int]], np.ndarray] | None = None,
    source_power: float = 0.0,
    source_group: Mapping[str, str] | None = None,
    code_experts: Mapping[str, Sequence[str]] | None = None,
    code_threshold: float = 0.0,
) -> list[HeldOut]:
    """Held-out predictions for every source; `test_only` sources are tested but never trained on.
    A fold holds out a whole family (`family`: source -> the source it derives from, by default the
    label map's `derived_from`): humaneval_nl, built from HumanEval's rows, is held out with HumanEval.

    Each fold fits the `coe router train` recipe: ensemble (inner, where nested) weights `fit_weights`;
    with `nest_sources`, the categories only those sources label in the fold's training data nested
    (eval.training.train.inner_categories) under an outer mixture of weight `nested_weight`, as `--format
    mix` does.

    With `weights`, each fold's two heads are also combined with each embedding-head weight w (lexical
    1 - w, the fold's fitted temperature), so one run compares weights across sources: the outer
    mixture's weight when the fold nests subjects, the ensemble's otherwise. With `hold_out`, only the
    folds of those families (and the eval-only fold) are fitted: one fit each, on 2 cores minutes.

    With `fold_embed` (training rows -> embeddings of every text: an encoder fine-tuned on those rows
    only, eval/training/finetune.py) each fold embeds with its own encoder and `embed` is not called; it
    must embed `eval_texts(examples)`, the prompts' texts then their pasted code.

    With `source_power`, each fold's rows are weighed by `eval.training.balance.source_weights` over their
    sources, or over the groups `source_group` puts them in (source -> group, e.g. real / written).

    With `code_experts` (category -> experts, the seeded registry's) a held-out prompt with pasted code
    is read as the service reads it (`router.core.code_to_read` at `code_threshold`, the artifact's
    fallback threshold): its code too when its instruction names no subject or is vague."""
    texts, codes = eval_texts(examples)
    code_row = {i: len(texts) + j for j, i in enumerate(i for i, c in enumerate(codes) if c)}
    emb = embed(texts + [c for c in codes if c]) if kind != "tfidf" and fold_embed is None else None
    labels = [e.label for e in examples]
    if family is None:
        from eval.data.mix import families

        family = families()
    fam = [family.get(e.source, e.source) for e in examples]
    # the sources never trained on share one fold: every fold of theirs would fit the same model
    fam = [EVAL_ONLY_FOLD if e.source in test_only else f for e, f in zip(examples, fam, strict=True)]
    out: list[HeldOut] = []
    for held in dict.fromkeys(fam):
        if hold_out and held not in hold_out and held != EVAL_ONLY_FOLD:
            continue
        tr = [i for i, e in enumerate(examples) if fam[i] != held and e.source not in test_only]
        te = [i for i, f in enumerate(fam) if f == held]
        train_labels = {labels[i] for i in tr}
        if log:
            log(f"held out {held}: training on {len(tr)} prompts of the other sources, testing on {len(te)}")
        if fold_embed is not None and kind != "tfidf":
            emb = fold_embed(tr)
        clf = fit_classifier(
            [texts[i] for i in tr],
            [labels[i] for i in tr],
            embedder=None,
            embeddings=emb[tr] if emb is not None else None,
            kind=kind,
            groups=[examples[i].group for i in tr],
            seed=seed,
            inner=inner_categories([labels[i] for i in tr], [examples[i].source for i in tr], nest_sources),
            weights=fit_weights,
            nested_weight=nested_weight,
            sample_weight=source_weights(
                [labels[i] for i in tr],
                [examples[i].source for i in tr],
                source_power,
                source_group,
            )
            if source_power
            else None,
        )
        te_texts, te_emb = [texts[i] for i in te], emb[te] if emb is not None else None
        probs = clf.predict_proba(te_texts, te_emb)
        if code_experts is not None:
            _read_code(
                [examples[i].text for i in te],
                [code_row.get(i) for i in te],
                probs,
                clf,
                emb,
                code_experts,
                code_threshold,
            )
        variants = [(-1.0, probs)]
        if weights and clf.kind == "hybrid":
            lps = clf.head_log_probas(te_texts, te_emb)
            for w in weights:
                mixed = softmax((w * lps[0] + (1 - w) * lps[1]) / clf.temperature)
                if clf.nested is not None:
                    idx = np.array([clf.categories.index(c) for c in clf.nested.inner])
                    mixed = nest(mixed, clf.combine_inner(lps), idx)
                variants.append((w, mixed))
        for w, probs in variants:
            for row, i in zip(probs, te, strict=True):
                j = int(row.argmax())
                seen = labels[i] in train_labels
                ranked = tuple(sorted(zip(clf.categories, row.tolist(), strict=True), key=lambda cp: -cp[1]))
                out.append(
                    HeldOut(examples[i].source, labels[i], clf.categories[j], float(row[j]), seen, w, ranked)
                )
    return out


#: how `within_folds` renames a row of a split source: `<source>@<fold>`
WITHIN = "@"


@dataclass(frozen=True, slots=True)
class WithinFolds:
    """`coe eval sources --within K`: the examples with the split sources' rows renamed by fold, and what
    `leave_one_source_out` needs to hold out each fold in turn (see `within_folds`)."""

    examples: list[Example]
    family: dict[str, str]  # every source -> the fold it is held out with
    hold_out: frozenset[str]  # the K folds
    source_group: dict[str, str]  # a renamed source -> its source's group (source_weights)
    origin: dict[str, str]  # a renamed source -> its source

    def restore(self, rows: Sequence[HeldOut]) -> list[HeldOut]:
        """Held-out rows under their own sources' names again (the summary reports by source)."""
        return [replace(r, source=self.origin.get(r.source, r.source)) for r in rows]


def check_folds(k: int) -> int:
    """`--within K` checked: at least 2 folds (a BadRequest: one line from the CLI)."""
    if k < 2:
        from router.errors import BadRequest

        raise BadRequest(f"--within must be at least 2 folds, got {k}")
    return k


def within_folds(
    examples: Sequence[Example],
    k: int,
    split: frozenset[str],
    family: Mapping[str, str],
    source_group: Mapping[str, str] | None = None,
) -> WithinFolds:
    """The rows of the sources `split` (the real-prompt ones) dealt into `k` folds, by a hash, so the same
    row always lands in the same fold: how the recipe reads *new prompts from the sources it trains on*
    (the shipped artifact's case on traffic like its training traffic), where holding out a whole source
    asks how it reads a source it never saw. A source whose rows come in more than `k` provenance groups
    (Arena-Hard's 250 topic clusters of two prompts each) is dealt by group, so no prompt is tested beside
    its cluster's twin; the others row by row. Every other source is trained on in every fold; its
    family and group stay as `family` and `source_group` say; a renamed row weighs as its source does."""
    import hashlib

    check_folds(k)
    groups: dict[str, set[str]] = {}
    for e in examples:
        if e.source in split:
            groups.setdefault(e.source, set()).add(e.group)
    out, fam, origin = [], dict(family), {}
    group = dict(source_group or {})
    for e in examples:
        if e.source not in split:
            out.append(e)
            continue
        key = e.group if len(groups[e.source]) > k else e.text
        fold = int(hashlib.sha1(f"{e.source}\n{key}".encode()).hexdigest(), 16) % k
        name = f"{e.source}{WITHIN}{fold}"
        fam[name] = f"within fold {fold}"
        origin[name] = e.source
        group[name] = group.get(e.source, e.source)
        out.append(replace(e, source=name))
    return WithinFolds(out, fam, frozenset(f"within fold {i}" for i in range(k)), group, origin)


def eval_texts(examples: Sequence[Example]) -> tuple[list[str], list[str | None]]:
    """What the classifier reads of each prompt (`routing_text`), and its pasted code (`code_text`, None
    when it has none): leave_one_source_out's embeddings are those of the texts, then of the codes."""
    return [routing_text(e.text) for e in examples], [code_text(e.text) for e in examples]


def _read_code(
    raw: Sequence[str],
    rows: Sequence[int | None],
    probs: np.ndarray,
    clf: Any,
    emb: np.ndarray | None,
    experts: Mapping[str, Sequence[str]],
    threshold: float,
) -> None:
    """The service's second reading (router.core.code_to_read/read_code) of held-out prompts, in place."""
    todo, topicless = code_to_read(raw, probs, clf.categories, experts, threshold)
    if todo:
        at = [cast(int, rows[i]) for i, _ in todo]
        code_emb = emb[at] if emb is not None else None
        read_code(probs, todo, topicless, clf.predict_proba([c for _, c in todo], code_emb))


def right_expert(
    rows: Sequence[HeldOut],
    expert_of: Mapping[str, str],
    generalist: str,
    threshold: float,
    key: Callable[[HeldOut], Hashable] = attrgetter("source"),
) -> dict[Hashable, dict[str, float]]:
    """Per source (or per `key`): share routed to the true label's first expert (the generalist below the
    threshold), and the share below the threshold."""
    out: dict[Hashable, dict[str, float]] = {}
    for k in dict.fromkeys(key(r) for r in rows):
        sub = [r for r in rows if key(r) == k]
        fell = [r.expert_confidence(expert_of) < threshold for r in sub]
        got = [generalist if f else expert_of.get(r.pred, generalist) for r, f in zip(sub, fell, strict=True)]
        want = [expert_of.get(r.label, generalist) for r in sub]
        out[k] = {
            "right_expert": round(float(np.mean([a == b for a, b in zip(got, want, strict=True)])), 4),
            "fallback": round(float(np.mean(fell)), 4),
        }
    return out


def by_label(
    rows: Sequence[HeldOut], expert_of: Mapping[str, str], generalist: str, threshold: float
) -> dict[str, dict[str, dict[str, float]]]:
    """Source -> true label -> n, right-expert share, fallback share: "coding requests reach the code
    expert", per held-out source, rather than one figure for a source that mixes several intents."""
    shares = right_expert(rows, expert_of, generalist, threshold, key=lambda r: (r.source, r.label))
    counts = Counter((r.source, r.label) for r in rows)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for pair, v in shares.items():
        src, label = cast(tuple[str, str], pair)
        out.setdefault(src, {})[label] = {"n": counts[src, label], **v}
    return out


def threshold_sources(rows: Sequence[HeldOut], min_seen: float = 0.5) -> set[str]:
    """The sources at least `min_seen` of whose held-out rows carry a label their fold trained on."""
    srcs = dict.fromkeys(r.source for r in rows)
    return {s for s in srcs if np.mean([r.seen for r in rows if r.source == s]) >= min_seen} or set(srcs)


def by_weight(rows: Sequence[HeldOut]) -> dict[float, list[HeldOut]]:
    out: dict[float, list[HeldOut]] = {}
    for r in rows:
        out.setdefault(r.weight, []).append(r)
    return out


def by_intent(
    rows: Sequence[HeldOut],
    expert_of: Mapping[str, str],
    generalist: str,
    threshold: float,
    sources: frozenset[str],
) -> dict[str, dict[str, float]]:
    """Intent (true label) -> n, right-expert share and fallback share, pooled over the held-out rows of
    `sources` (the real-prompt sources: "coding requests people type reach the code expert")."""
    sub = [r for r in rows if r.source in sources]
    shares = right_expert(sub, expert_of, generalist, threshold, key=attrgetter("label"))
    counts = Counter(r.label for r in sub)
    return {
        str(k): {"n": counts[str(k)], **v}
        for k, v in sorted(shares.items(), key=lambda kv: -counts[str(kv[0])])
    }


def _intent_mean(shares: Mapping[str, Mapping[str, float]]) -> float:
    """Mean right-expert share over the intents with at least MIN_INTENT_N prompts (all, when none has)."""
    big = [v["right_expert"] for v in shares.values() if v["n"] >= MIN_INTENT_N]
    return float(np.mean(big or [v["right_expert"] for v in shares.values()]))


def _intent_mean_se(shares: Mapping[str, Mapping[str, float]]) -> float:
    """The binomial standard error of `_intent_mean` (the intents' shares are independent samples)."""
    big = [v for v in shares.values() if v["n"] >= MIN_INTENT_N] or list(shares.values())
    var = sum(v["right_expert"] * (1 - v["right_expert"]) / max(v["n"], 1) for v in big)
    return float(np.sqrt(var)) / len(big)


def summarise(
    rows: Sequence[HeldOut],
    expert_of: Mapping[str, str],
    generalist: str,
    threshold: float | None = None,
    choose_on: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Per-source accuracy, confusion, right-expert share and fallback; the chosen threshold if none given.

    On the real-prompt folds the mean over intents is flat near its best (issue 25's third pass: 0.825 to
    0.841 from 0.45 to 0.7, a spread under one standard error), so the threshold is chosen by the
    one-standard-error rule: the *lowest* threshold whose mean is within one (binomial) standard error of
    the best one's — the least the fallback overrides the classifier for a result the folds cannot tell
    from the best. `best_threshold` stays the plain argmax.

    The threshold is chosen over the held-out `choose_on` sources present (the real-prompt sources),
    else over those whose labels their fold's training data mostly has (`threshold_sources`): MMLU-Pro
    held out leaves 12 of its 14 subjects untrained, so its fold says nothing about how confident a router
    that has them should be before it answers."""
    sweep = {t: right_expert(rows, expert_of, generalist, t) for t in THRESHOLDS}
    real = frozenset(r.source for r in rows if r.source in choose_on)
    chooses = set(real) or threshold_sources(rows)
    mean = {
        t: float(np.mean([v["right_expert"] for k, v in s.items() if k in chooses])) for t, s in sweep.items()
    }
    intents: dict[float, dict[str, dict[str, float]]] = {}
    if real:
        # real prompts mix intents unevenly (Open-Assistant is 80% chat, whose right expert *is* the
        # generalist): the threshold is chosen on the mean over the intents, pooled over the real folds
        intents = {t: by_intent(rows, expert_of, generalist, t, real) for t in THRESHOLDS}
        mean = {t: _intent_mean(s) for t, s in intents.items()}
    best = max(THRESHOLDS, key=lambda t: (mean[t], -t))
    se = _intent_mean_se(intents[best]) if intents else 0.0
    one_se = min(t for t in THRESHOLDS if mean[t] >= mean[best] - se)
    chosen = one_se if threshold is None else threshold
    at = sweep.get(chosen) or right_expert(rows, expert_of, generalist, chosen)
    labels_at = by_label(rows, expert_of, generalist, chosen)
    per_source: dict[str, Any] = {}
    for src in dict.fromkeys(r.source for r in rows):
        sub = [r for r in rows if r.source == src]
        seen = [r for r in sub if r.seen]
        per_source[src] = {
            "n": len(sub),
            "accuracy": round(float(np.mean([r.pred == r.label for r in sub])), 4),
            "accuracy_seen_labels": round(float(np.mean([r.pred == r.label for r in seen])), 4)
            if seen
            else None,
            "labels": dict(Counter(r.label for r in sub)),
            "top_predictions": dict(Counter(r.pred for r in sub).most_common(5)),
            **at[src],
            "by_label": labels_at[src],
        }
    labels = sorted({r.label for r in rows} | {r.pred for r in rows})
    li = {c: i for i, c in enumerate(labels)}
    conf = np.zeros((len(labels), len(labels)), dtype=int)
    for r in rows:
        conf[li[r.label], li[r.pred]] += 1
    return {
        "threshold": chosen,
        "best_threshold": best,
        "one_se_threshold": one_se,
        "mean_standard_error": round(se, 4),
        "threshold_sources": sorted(chooses),
        "threshold_chosen_by": "the lowest threshold within one standard error of the best mean right "
        f"expert over the intents with >= {MIN_INTENT_N} prompts, pooled over the held-out real-prompt "
        "sources"
        if real
        else "mean right expert over the held-out sources",
        "by_intent_real": by_intent(rows, expert_of, generalist, chosen, frozenset(chooses)),
        "by_intent_real_by_threshold": {
            str(t): {k: v["right_expert"] for k, v in s.items()} for t, s in intents.items()
        },
        "mean_right_expert_by_threshold": {str(t): round(v, 4) for t, v in mean.items()},
        "per_source": per_source,
        "confusion": {"labels": labels, "matrix": conf.tolist()},
    }


def markdown(summary: Mapping[str, Any]) -> str:
    lines = [
        f"Threshold {summary['threshold']} (best by mean right-expert share: {summary['best_threshold']}; "
        f"the lowest within one standard error, {summary.get('mean_standard_error', 0)}, of it: "
        f"{summary.get('one_se_threshold', summary['best_threshold'])}).",
        "",
        "| held-out source | n | accuracy | accuracy (labels seen in training) | right expert | fallback |",
        "|---|---|---|---|---|---|",
    ]
    for src, v in summary["per_source"].items():
        seen = "—" if v["accuracy_seen_labels"] is None else f"{v['accuracy_seen_labels']:.3f}"
        lines.append(
            f"| {src} | {v['n']} | {v['accuracy']:.3f} | {seen} | {v['right_expert']:.3f} "
            f"| {v['fallback']:.3f} |"
        )
    lines += [
        "",
        "Right expert by the prompt's own label (the intent), per held-out source:",
        "",
        "| held-out source | label | n | right expert | fallback |",
        "|---|---|---|---|---|",
    ]
    for src, v in summary["per_source"].items():
        for label, w in sorted(v["by_label"].items(), key=lambda kv: -kv[1]["n"])[:LABEL_ROWS]:
            lines.append(f"| {src} | {label} | {w['n']} | {w['right_expert']:.3f} | {w['fallback']:.3f} |")
    lines += [
        "",
        "Right expert by intent, pooled over the held-out real-prompt sources "
        f"({', '.join(summary['threshold_sources'])}):",
        "",
        "| intent | n | right expert | fallback |",
        "|---|---|---|---|",
    ]
    for label, w in summary.get("by_intent_real", {}).items():
        lines.append(f"| {label} | {w['n']} | {w['right_expert']:.3f} | {w['fallback']:.3f} |")
    return "\n".join(lines) + "\n"


# --- label noise: rows of a single-label source that a teacher trained without it calls something else ---
def teacher_drops(
    examples: Sequence[Example],
    embed: Callable[[list[str]], np.ndarray],
    *,
    source: str,
    categories: Sequence[str],
    min_p: float,
    test_only: frozenset[str] = frozenset(),
    seed: int = 0,
) -> list[tuple[str, str, float]]:
    """(id, predicted category, P) of the `source` rows that a classifier fitted, as `coe router train`
    fits one, on every *other* training source assigns to one of `categories` with P >= min_p.

    AlpacaEval has no per-row task labels, so the mix labels all of it `chat`; its few coding and maths
    requests then teach the router that such requests are chat. Dropping the rows an independent teacher
    confidently calls coding/maths removes that noise without hand-labelling anything (label_map.yaml
    `drop_ids`, regenerated by `python -m eval.classify.sources --data ../shared/data`)."""
    texts = [routing_text(e.text) for e in examples]
    emb = embed(texts)
    tr = [i for i, e in enumerate(examples) if e.source != source and e.source not in test_only]
    te = [i for i, e in enumerate(examples) if e.source == source]
    clf = fit_classifier(
        [texts[i] for i in tr],
        [examples[i].label for i in tr],
        embedder=None,
        embeddings=emb[tr],
        groups=[examples[i].group for i in tr],
        seed=seed,
    )
    probs = clf.predict_proba([texts[i] for i in te], emb[te])
    out = []
    for i, row in zip(te, probs, strict=True):
        j = int(row.argmax())
        if clf.categories[j] in categories and row[j] >= min_p:
            out.append((examples[i].id, clf.categories[j], round(float(row[j]), 3)))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Print the AlpacaEval rows to drop (label_map.yaml `drop_ids`), with the teacher's call on each."""
    import argparse

    from eval.data.datasets import sample
    from eval.data.mix import eval_only, load_label_map, load_mix, load_source
    from eval.training.embedding import CachedEmbedder
    from router.embedder import make_embedder

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", default=None, help="embedding cache folder")
    ap.add_argument("--source", default="alpaca_eval")
    ap.add_argument("--categories", default="coding,math")
    ap.add_argument("--min-p", type=float, default=0.5)
    ap.add_argument("--max-per-source", type=int, default=4000, help="seeded sample per source (CPU)")
    args = ap.parse_args(argv)
    from pathlib import Path

    table = load_label_map()
    # the teacher reads the source's rows as they are, before any drop
    raw = load_source(args.source, {**table[args.source], "drop_ids": []}, Path(args.data))
    rest = [e for e in load_mix(args.data) if e.source != args.source]
    by_src: dict[str, list[Example]] = {}
    for e in rest:
        by_src.setdefault(e.source, []).append(e)
    examples = [e for rows in by_src.values() for e in sample(rows, args.max_per_source)] + raw
    embedder: Any = make_embedder("default", "torch")
    if args.cache:
        embedder = CachedEmbedder(embedder, args.cache)
    drops = teacher_drops(
        examples,
        embedder.embed,
        source=args.source,
        categories=args.categories.split(","),
        min_p=args.min_p,
        test_only=eval_only(),
    )
    if args.cache:
        embedder.flush()
    text = {e.id: e.text for e in raw}
    for rid, cat, p in drops:
        print(f"      - {rid.split(':', 1)[1]:>4}  # {cat} {p:.2f}: {' '.join(text[rid].split())[:70]}")


if __name__ == "__main__":
    main()
