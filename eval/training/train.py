"""Router training: `fit_classifier` (also used by the routing eval) and the `coe router train` job.

The classifier is a calibrated ensemble of two multinomial logistic regressions, one over the sentence
embedding and one over word+char TF-IDF (router/classifier.py). `fit_classifier` fits the heads on 80% of
its input, chooses the ensemble weight and the softmax temperature on the other 20% (log-loss), then
refits the heads on everything."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.data.datasets import Example
from eval.training.balance import source_weights
from router.classifier import LinearHead, Nested, SkillClassifier, TfidfFeatures, nest, new_manifest, softmax
from router.embedder import Embedder, backend_of
from router.errors import BadRequest
from router.prototypes import reference_sample
from router.text import routing_text

KINDS = ("hybrid", "embedding", "tfidf")
#: inverse regularisation of the two heads (chosen on the cross-family split, see docs/router.md)
C_EMBEDDING = 4.0
C_LEXICAL = 10.0
#: (embedding, lexical) weights of the log-linear ensemble: the largest embedding weight (0.1 grid) that
#: keeps MMLU-Pro held-out accuracy within 1 point of the MMLU-only router; a larger one generalises
#: better to sources left out of training (docs/router.md, "Measured across sources").
#: None = search them on the calibration split by log-loss
ENSEMBLE_WEIGHTS: tuple[float, float] | None = (0.5, 0.5)
#: the category policy's fallback threshold recorded in the artifact (manifest `routing`), compared with
#: the confidence in the best category's *expert* (router.types.expert_confidence), chosen on the
#: real-prompt folds (docs/router.md "Sources weighed evenly"): the mean right-expert share over the
#: intents with at least 20 prompts (coding, chat, writing, maths, role-play), pooled over the three
#: held-out real-prompt sources, is best at 0.65 (0.841) and flat around it; the lowest threshold within
#: one standard error (0.014) of that is 0.45 (eval.classify.sources.summarise)
FALLBACK_THRESHOLD = 0.45
THRESHOLD_CHOSEN_BY = (
    "coe eval sources --data ../shared/data --max-per-source 4000 --hold-out real --finetune-layers 2 "
    "(--source-balance 0.5): the lowest threshold within one standard error of the best mean right-expert "
    "share over the intents with >= 20 prompts, pooled over the held-out real-prompt sources (Arena-Hard, "
    "Arena-Bench, Open-Assistant), each fold's encoder tuned without its source, pasted code read as the "
    "service reads it, the fallback judged on the expert's summed probability (docs/router.md)"
)
#: nested subjects (router/classifier.py `Nested`, `--format mix`): the embedding weight of the outer
#: mixture, which decides between the exam subjects as a group (the categories the label map's `nest: true`
#: sources label most) and coding, maths, writing, chat... With the real prompts in the mix, 0.85 left
#: MMLU-Pro held-out accuracy at 0.822 (bar 0.83); 0.6 gives 0.836 and the same Arena-Hard fold figures
#: (right expert 0.684 at both; docs/router.md "Measured on real prompts")
NESTED_WEIGHT = 0.6
#: ... and the inner mixture's, which picks the subject within the group: the exam-question weight (the
#: previous default's). The pair is the largest outer weight (0.05 grid) that keeps MMLU-Pro held-out
#: accuracy within 1 point of the MMLU-only router, at the inner weight that allows the largest one.
SUBJECT_WEIGHTS: tuple[float, float] = (0.4, 0.6)
#: class priors differ between sources; balanced weights generalise better across question families
CLASS_WEIGHT: str | None = "balanced"

Progress = Callable[[str], None]


def _lr(
    x: Any,
    y: np.ndarray,
    C: float,
    seed: int,
    class_weight: str | None = CLASS_WEIGHT,
    sample_weight: np.ndarray | None = None,
) -> tuple[LinearHead, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed, class_weight=class_weight)
    clf.fit(x, y, sample_weight=sample_weight)
    return LinearHead(clf.coef_.astype(np.float32), clf.intercept_.astype(np.float64)), clf.classes_


def _fit_heads(
    kind: str,
    texts: Sequence[str],
    emb: np.ndarray | None,
    y: np.ndarray,
    n_classes: int,
    seed: int,
    c_emb: float,
    c_lex: float,
    max_features: int,
    class_weight: str | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[LinearHead | None, tuple[TfidfFeatures, LinearHead] | None]:
    emb_head = lexical = None
    if kind in ("hybrid", "embedding"):
        assert emb is not None
        emb_head, classes = _lr(emb, y, c_emb, seed, class_weight, sample_weight)
        emb_head = _expand(emb_head, classes, n_classes)
    if kind in ("hybrid", "tfidf"):
        feats = TfidfFeatures.fit(texts, max_word=max_features, max_char=max_features)
        head, classes = _lr(feats.transform(texts), y, c_lex, seed, class_weight, sample_weight)
        lexical = (feats, _expand(head, classes, n_classes))
    return emb_head, lexical


def _expand(head: LinearHead, classes: np.ndarray, n_classes: int) -> LinearHead:
    """Full (C, d) coefficients when a fit saw only some classes (absent ones get a very low intercept)."""
    if len(classes) == 2 and head.coef.shape[0] == 1:  # binary LR stores one row
        coef = np.vstack([-head.coef / 2, head.coef / 2])
        inter = np.array([-head.intercept[0] / 2, head.intercept[0] / 2])
        head = LinearHead(coef.astype(np.float32), inter)
    if len(classes) == n_classes:
        return head
    coef = np.zeros((n_classes, head.coef.shape[1]), dtype=np.float32)
    inter = np.full(n_classes, -30.0)
    coef[classes] = head.coef
    inter[classes] = head.intercept
    return LinearHead(coef, inter)


def _nll(logp: np.ndarray, y: np.ndarray) -> float:
    return float(-logp[np.arange(len(y)), y].mean())


def calibrate(
    logps: Sequence[np.ndarray], y: np.ndarray, fixed: tuple[float, float] | None = None
) -> tuple[tuple[float, float], float]:
    """Ensemble weights (w, 1-w) and temperature minimising held-out log-loss (grid search)."""
    best = (np.inf, (1.0, 1.0), 1.0)
    weights = [(w, 1 - w) for w in np.linspace(0, 1, 11)] if len(logps) == 2 else [(1.0, 0.0)]
    if fixed is not None and len(logps) == 2:
        weights = [fixed]
    for w in weights:
        z = w[0] * logps[0] + (w[1] * logps[1] if len(logps) == 2 else 0)
        for t in np.exp(np.linspace(np.log(0.25), np.log(4.0), 41)):
            nll = _nll(np.log(np.maximum(softmax(z / t), 1e-12)), y)
            if nll < best[0]:
                best = (nll, (float(w[0]), float(w[1])), float(t))
    weights_out = best[1] if len(logps) == 2 else (1.0, 1.0)
    return weights_out, best[2]


def fit_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    embedder: Embedder | None,
    embeddings: np.ndarray | None = None,
    kind: str = "hybrid",
    categories: Sequence[str] | None = None,
    c_embedding: float = C_EMBEDDING,
    c_lexical: float = C_LEXICAL,
    max_features: int = 30000,
    calibrate_on: float = 0.2,
    groups: Sequence[str] | None = None,
    weights: tuple[float, float] | None = ENSEMBLE_WEIGHTS,
    class_weight: str | None = CLASS_WEIGHT,
    seed: int = 0,
    inner: Sequence[str] = (),
    nested_weight: float = NESTED_WEIGHT,
    sample_weight: Sequence[float] | np.ndarray | None = None,
) -> SkillClassifier:
    """Fit a calibrated SkillClassifier (no manifest: `train_router` adds one when it saves).

    The ensemble weight (when `weights` is None) and the temperature are chosen on a held-out
    `calibrate_on` share. With `groups` (e.g. the source subject of each text) that share is whole
    groups, so the weights favour the head that generalises to unseen kinds of question rather than
    the one that memorises the training sources' vocabulary. With `inner` (2 or more of the categories,
    hybrid only) the classifier nests them under an outer mixture of embedding weight `nested_weight`
    and the temperature is fitted on the nested probabilities."""
    if kind not in KINDS:
        raise BadRequest(f"unknown classifier kind {kind!r}; known: {', '.join(KINDS)}")
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels) or not texts:
        raise BadRequest("fit_classifier needs as many labels as texts, and at least one")
    cats = tuple(sorted(set(labels))) if categories is None else tuple(categories)
    if len(cats) < 2:
        raise BadRequest("a router needs at least two categories in its training data")
    index = {c: i for i, c in enumerate(cats)}
    y = np.array([index[label] for label in labels])
    emb = None
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if sw is not None and len(sw) != len(texts):
        raise BadRequest("fit_classifier needs one sample weight per text")
    if kind != "tfidf":
        if embeddings is None and embedder is not None:
            embeddings = embedder.embed(texts)
        if embeddings is None:
            raise BadRequest(f"a {kind} classifier needs an embedder or precomputed embeddings")
        emb = np.asarray(embeddings, dtype=np.float32)

    def fit(idx: np.ndarray) -> tuple[LinearHead | None, tuple[TfidfFeatures, LinearHead] | None]:
        return _fit_heads(
            kind,
            [texts[i] for i in idx],
            emb[idx] if emb is not None else None,
            y[idx],
            len(cats),
            seed,
            c_embedding,
            c_lexical,
            max_features,
            class_weight,
            sw[idx] if sw is not None else None,
        )

    if kind != "hybrid":
        weights = None  # one head: only the temperature matters
    chosen, temperature = weights or ((0.5, 0.5) if kind == "hybrid" else (1.0, 1.0)), 1.0
    nested = None
    if kind == "hybrid" and len(inner) >= 2:
        if not set(inner) <= set(cats):
            raise BadRequest(f"nested categories {sorted(set(inner) - set(cats))} are not in the data")
        nested = Nested((float(nested_weight), 1.0 - float(nested_weight)), tuple(inner))
    cal = _calibration_split(y, groups, calibrate_on, seed)
    if cal is not None:
        tr, va = cal
        heads = fit(tr)
        probe = SkillClassifier(cats, embedding_head=heads[0], lexical=heads[1])
        logps = probe.head_log_probas([texts[i] for i in va], emb[va] if emb is not None else None)
        found, temperature = calibrate(logps, y[va], fixed=weights)
        chosen = weights or found
        if nested is not None:
            temperature = _nested_temperature(logps, y[va], chosen, nested, cats)
    emb_head, lexical = fit(np.arange(len(texts)))
    return SkillClassifier(
        cats, embedding_head=emb_head, lexical=lexical, weights=chosen, temperature=temperature, nested=nested
    )


def _nested_temperature(
    logps: Sequence[np.ndarray],
    y: np.ndarray,
    weights: tuple[float, float],
    nested: Nested,
    cats: Sequence[str],
) -> float:
    """The temperature minimising held-out log-loss of the nested probabilities (same grid as calibrate)."""
    inner = np.array([list(cats).index(c) for c in nested.inner])
    z_in = weights[0] * logps[0] + weights[1] * logps[1]
    z_out = nested.weights[0] * logps[0] + nested.weights[1] * logps[1]
    best = (np.inf, 1.0)
    for t in np.exp(np.linspace(np.log(0.25), np.log(4.0), 41)):
        p = nest(softmax(z_out / t), softmax(z_in / t), inner)
        nll = _nll(np.log(np.maximum(p, 1e-12)), y)
        if nll < best[0]:
            best = (nll, float(t))
    return best[1]


def inner_categories(
    labels: Sequence[str], sources: Sequence[str], nest_sources: frozenset[str]
) -> tuple[str, ...]:
    """The categories more than half of whose rows come from a `nest_sources` source (the exam subjects:
    MMLU-Pro's own, which a few real prompts label too; not `math`, which GSM8K, MATH and the chat sets
    label more often); () unless there are 2 or more of them and some category outside them."""
    total: Counter[str] = Counter(labels)
    nested: Counter[str] = Counter(
        lab for lab, src in zip(labels, sources, strict=True) if src in nest_sources
    )
    inner = tuple(sorted(c for c in total if nested[c] * 2 > total[c]))
    return inner if 2 <= len(inner) < len(total) else ()


def _calibration_split(
    y: np.ndarray, groups: Sequence[str] | None, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    if share <= 0 or len(y) < 50:
        return None
    idx = np.arange(len(y))
    if groups is not None and len(set(groups)) >= 5:
        from sklearn.model_selection import GroupShuffleSplit

        g = np.asarray(list(groups))
        tr, va = next(GroupShuffleSplit(1, test_size=share, random_state=seed).split(idx, y, g))
        if len(set(y[tr])) == len(set(y)):  # every class must stay trainable
            return tr, va
    if min(Counter(y.tolist()).values()) < 2:
        return None
    from sklearn.model_selection import train_test_split

    tr, va = train_test_split(idx, test_size=share, stratify=y, random_state=seed)
    return tr, va


def _tuned_embedder(
    tr_texts: Sequence[str],
    tr_labels: Sequence[str],
    va_texts: Sequence[str],
    k: int,
    out: Path,
    seed: int,
    say: Progress,
    tr_weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[Embedder, dict[str, Any]]:
    """The top k layers tuned on the training texts, saved into the artifact folder `out` (encoder.npz),
    and an embedder serving every training and validation text's embedding under the tuned name."""
    import time

    from eval.training.finetune import MAX_SEQ_LENGTH, FixedEmbedder, LayerTuner, state_of
    from router.tuned_encoder import save_tuned

    texts = list(dict.fromkeys([*tr_texts, *va_texts]))
    row = {t: i for i, t in enumerate(texts)}
    labels = [""] * len(texts)
    for t, y in zip(tr_texts, tr_labels, strict=True):
        labels[row[t]] = y
    weight = None
    if tr_weights is not None:
        weight = [0.0] * len(texts)
        for t, w in zip(tr_texts, tr_weights, strict=True):
            weight[row[t]] = float(w)
    t0 = time.perf_counter()
    tuner = LayerTuner(texts, k, seed=seed)
    say(f"bottom {tuner.first} layers on {len(texts)} texts: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    top = tuner.tune(labels, sorted({row[t] for t in tr_texts}), say, sample_weight=weight)
    tuned = save_tuned(out, state_of(top, tuner.first), MAX_SEQ_LENGTH)
    emb = tuner.embed(top)
    say(
        f"fine-tuned layers {list(tuned.layers)} and embedded in {time.perf_counter() - t0:.1f} s; "
        f"{tuned.path.name} {tuned.path.stat().st_size / 1e6:.1f} MB"
    )
    return FixedEmbedder(texts, emb, tuned.name), tuned.manifest_entry()


# --- the train job ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TrainResult:
    out: Path
    version: str
    metrics: dict[str, Any]
    n_train: int
    n_val: int


def split(
    examples: Sequence[Example], val_fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Stratified train/validation split (plain random when some category is too small to stratify)."""
    if not 0.0 < val_fraction < 1.0:
        raise BadRequest("--val-fraction must be between 0 and 1")
    from sklearn.model_selection import train_test_split

    labels = [e.label for e in examples]
    counts = Counter(labels)
    n_val = max(1, round(len(examples) * val_fraction))
    stratify = labels if min(counts.values()) >= 2 and n_val >= len(counts) else None
    tr, va = train_test_split(np.arange(len(examples)), test_size=n_val, stratify=stratify, random_state=seed)
    return [examples[i] for i in sorted(tr)], [examples[i] for i in sorted(va)]


def split_by_source(
    examples: Sequence[Example], val_fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """`split` within each source (Example.source), so every source has its held-out share; with one
    source this is exactly `split` (the MMLU-Pro held-out split stays the one earlier routers used)."""
    sources = list(dict.fromkeys(e.source for e in examples))
    if len(sources) <= 1:
        return split(examples, val_fraction, seed)
    train: list[Example] = []
    val: list[Example] = []
    for src in sources:
        sub = [e for e in examples if e.source == src]
        if len(sub) < 2:
            train += sub
            continue
        tr, va = split(sub, val_fraction, seed)
        train += tr
        val += va
    return train, val


def embed_batched(
    embedder: Embedder, texts: Sequence[str], *, batch: int = 256, desc: str = "embedding", show: bool = True
) -> np.ndarray:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not show, leave=False) as bar:
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            parts.append(embedder.embed(chunk))
            bar.update(len(chunk))
    return np.vstack(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def train_router(
    examples: Sequence[Example],
    *,
    out: str | Path,
    embedder: Embedder,
    val_fraction: float = 0.1,
    kind: str = "hybrid",
    seed: int = 0,
    with_options: bool = False,
    show_progress: bool = True,
    log: Progress | None = None,
    source: str = "",
    weights: tuple[float, float] | None = ENSEMBLE_WEIGHTS,
    threshold: float = FALLBACK_THRESHOLD,
    threshold_chosen_by: str = THRESHOLD_CHOSEN_BY,
    nest_sources: frozenset[str] = frozenset(),
    nested_weight: float = NESTED_WEIGHT,
    licences: Mapping[str, str] | None = None,
    finetune_layers: int = 0,
    source_power: float = 0.0,
    source_group: Mapping[str, str] | None = None,
) -> TrainResult:
    """Split, fit, evaluate on the held-out part, save the artifact with its manifest (which records
    the fallback `threshold` the service uses when neither the request nor the settings set one, and
    `training.sources`: each source's rows and its licence from `licences`).

    With `finetune_layers` K > 0 the bundled MiniLM's top K layers are first tuned on the training part
    (eval/training/finetune.py), stored in the artifact (encoder.npz, manifest `encoder`), and every
    text is embedded with them instead of with `embedder`.

    With `source_power` p > 0 the rows of each category are weighted so its sources (or the groups
    `source_group` puts them in: real prompts / written sets) weigh more evenly (eval.training.balance),
    in the fine-tuning loss and in both heads."""
    from eval.classify.classification import classification_metrics

    say = log or (lambda _m: None)
    labels = [e.label for e in examples]
    if len(set(labels)) < 2:
        raise BadRequest("training data needs at least two distinct labels")
    train, val = split_by_source(examples, val_fraction, seed)
    # Real queries often paste the options: train on the bare question and, where the source has options,
    # on the question with its options too (same label).
    tr_texts = [routing_text(e.text) for e in train] + (
        [e.with_options_text() for e in train if e.options] if with_options else []
    )
    tr_labels = [e.label for e in train] + ([e.label for e in train if e.options] if with_options else [])
    tr_groups = [e.group for e in train] + ([e.group for e in train if e.options] if with_options else [])
    tr_sources = [e.source for e in train] + ([e.source for e in train if e.options] if with_options else [])
    tr_weights = source_weights(tr_labels, tr_sources, source_power, source_group) if source_power else None
    va_texts, va_labels = [routing_text(e.text) for e in val], [e.label for e in val]
    say(
        f"training on {len(train)} examples ({len(tr_texts)} texts), validating on {len(val)}, "
        f"{len(set(labels))} categories"
    )
    encoder: dict[str, Any] = {}
    if finetune_layers > 0 and kind != "tfidf":
        embedder, encoder = _tuned_embedder(
            tr_texts, tr_labels, va_texts, finetune_layers, Path(out), seed, say, tr_weights
        )
    tr_emb = (
        embed_batched(embedder, tr_texts, desc="embed train", show=show_progress) if kind != "tfidf" else None
    )
    va_emb = (
        embed_batched(embedder, va_texts, desc="embed val", show=show_progress) if kind != "tfidf" else None
    )
    say(f"fitting the {kind} classifier")
    clf = fit_classifier(
        tr_texts,
        tr_labels,
        embedder=embedder,
        embeddings=tr_emb,
        kind=kind,
        categories=sorted(set(labels)),
        groups=tr_groups if all(tr_groups) else None,
        weights=weights,
        seed=seed,
        inner=inner_categories([e.label for e in train], [e.source for e in train], nest_sources),
        nested_weight=nested_weight,
        sample_weight=tr_weights,
    )
    if tr_emb is not None:
        index = {c: i for i, c in enumerate(clf.categories)}
        clf.reference = reference_sample(tr_emb, [index[y] for y in tr_labels], seed=seed)
    probs = clf.predict_proba(va_texts, va_emb)
    m = classification_metrics(va_labels, probs, clf.categories)
    majority = Counter(e.label for e in train).most_common(1)[0][0]
    metrics = {
        "split": "validation",
        "n": m["n"],
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "ece": m["ece"],
        "majority_accuracy": round(sum(y == majority for y in va_labels) / len(val), 4),
    }
    sources = sorted({e.source for e in val})
    if len(sources) > 1:
        pred = [clf.categories[i] for i in probs.argmax(axis=1)]
        metrics["per_source"] = {
            s: {
                "n": sum(e.source == s for e in val),
                "accuracy": round(
                    float(np.mean([p == e.label for p, e in zip(pred, val, strict=True) if e.source == s])), 4
                ),
            }
            for s in sources
        }
    manifest = new_manifest(
        categories=clf.categories,
        embedder_name=embedder.name,
        embedder_dim=embedder.dim,
        texts=tr_texts,
        labels=tr_labels,
        metrics=metrics,
        validated_backend=backend_of(embedder),
        training={
            "kind": kind,
            "n_train": len(train),
            "n_texts": len(tr_texts),
            "n_val": len(val),
            "val_fraction": val_fraction,
            "seed": seed,
            "with_options": with_options,
            "source": source,
            "sources": {
                name: {"rows": n, "licence": (licences or {}).get(name, "not recorded")}
                for name, n in Counter(e.source or source for e in examples).items()
            },
            "weights": list(clf.weights),
            "temperature": clf.temperature,
            **({"nested_weight": clf.nested.weights[0]} if clf.nested is not None else {}),
            **({"finetune_layers": finetune_layers} if encoder else {}),
            **({"source_power": source_power} if source_power else {}),
            **({"balance_by": sorted(set(source_group.values()))} if source_power and source_group else {}),
        },
        routing={"threshold": threshold, "chosen_by": threshold_chosen_by},
        encoder=encoder,
    )
    clf.save(out, manifest)
    return TrainResult(
        out=Path(out), version=manifest.version, metrics=metrics, n_train=len(train), n_val=len(val)
    )
