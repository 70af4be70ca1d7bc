"""Categories added from a handful of examples, beside the trained classifier (`coe router add-category`).

A `PrototypeHead` keeps the L2-normalised embeddings of its 10–50 examples. Its score for a query is the
mean cosine similarity to the k nearest examples; a 1-D logistic gate turns the score into
P(new category | x). The gate is calibrated against the existing categories: positives are the examples
scored leave-one-out against the others, negatives are the artifact's `reference` sample of training
prompts from every trained category; the slope comes from a logistic fit, the 0.5 point sits at least
halfway between the top 1% of negative scores and the bottom 10% of positive ones (fit_prototype_head).
The heads apply in the order they were added:

    P'(new) = g(x),   P'(c) = (1 - g(x)) · P(c)   for every earlier category c

so on prompts unlike the examples (g ≈ 0) the other categories keep their order, and their
probabilities change by the factor (1 - g) only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: examples averaged into a query's score (fewer when the head has fewer examples)
TOP_K = 3
#: reference training prompts kept per trained category in an artifact, for calibrating new heads
REFERENCE_PER_CATEGORY = 24


@dataclass(frozen=True, slots=True)
class PrototypeHead:
    category: str
    examples: np.ndarray  # (n, d) float32, rows L2-normalised
    k: int
    slope: float
    bias: float

    def score(self, emb: np.ndarray) -> np.ndarray:
        """Mean cosine similarity of each row of `emb` to its k most similar examples."""
        sims = np.asarray(emb, dtype=np.float32) @ self.examples.T
        k = max(1, min(self.k, sims.shape[1]))
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        return top.mean(axis=1).astype(np.float64)

    def gate(self, emb: np.ndarray) -> np.ndarray:
        z = np.clip(self.slope * self.score(emb) + self.bias, -50.0, 50.0)
        return 1.0 / (1.0 + np.exp(-z))


def apply_heads(probs: np.ndarray, emb: np.ndarray | None, heads: Sequence[PrototypeHead]) -> np.ndarray:
    """Append one column per head to (n, C) probabilities, gating the earlier columns (module docstring)."""
    if not heads:
        return probs
    if emb is None:
        raise ValueError("categories added from examples need embeddings")
    for h in heads:
        g = h.gate(emb)[:, None]
        probs = np.hstack([probs * (1.0 - g), g])
    return probs


def _loo_scores(examples: np.ndarray, k: int) -> np.ndarray:
    sims = examples @ examples.T
    np.fill_diagonal(sims, -np.inf)
    k = max(1, min(k, len(examples) - 1))
    return (-np.partition(-sims, k - 1, axis=1)[:, :k]).mean(axis=1)


def fit_prototype_head(
    category: str, examples: np.ndarray, reference: np.ndarray, k: int = TOP_K
) -> PrototypeHead:
    """Calibrate a head: 1-D logistic regression of leave-one-out example scores against reference scores."""
    from sklearn.linear_model import LogisticRegression

    ex = np.asarray(examples, dtype=np.float32)
    if len(ex) < 3:
        raise ValueError("a category from examples needs at least 3 examples")
    if len(reference) == 0:
        raise ValueError("no reference prompts to calibrate against")
    k = max(1, min(k, len(ex) - 1))
    probe = PrototypeHead(category, ex, k, 1.0, 0.0)
    pos = _loo_scores(ex, k)
    neg = probe.score(reference)
    x = np.concatenate([pos, neg])[:, None]
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    lr = LogisticRegression(C=100.0, class_weight="balanced", max_iter=1000).fit(x, y)
    slope = float(lr.coef_[0, 0])
    # The gate's 0.5 point: never below the balanced fit's, and at least halfway between the top 1% of
    # reference scores and the bottom 10% of the examples' scores. The balanced fit alone sits where
    # the two score clouds touch, and let the nearest reference prompts (a dice-probability question
    # against Python-function examples) flip to the new category.
    mid = max(-float(lr.intercept_[0]) / slope, (np.quantile(neg, 0.99) + np.quantile(pos, 0.10)) / 2)
    return PrototypeHead(category, ex, k, slope, -slope * float(mid))


def reference_sample(
    emb: np.ndarray, labels: Sequence[int], per_category: int = REFERENCE_PER_CATEGORY, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of up to `per_category` embeddings per label: (embeddings float16, label indices)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    idx = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        idx += sorted(rng.choice(rows, size=min(per_category, len(rows)), replace=False).tolist())
    idx_a = np.asarray(idx, dtype=np.int64)
    return np.asarray(emb, dtype=np.float32)[idx_a].astype(np.float16), y[idx_a].astype(np.int16)
