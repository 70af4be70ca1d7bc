"""The outcome matrix: how well (quality in [0, 1]) and at what price (USD) each model answered each
query, plus `RowIssue`, one malformed input row a loader kept instead of dropping silently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from router.errors import BadRequest


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One malformed input row: where it is and what is wrong with it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class OutcomeMatrix:
    """n queries × m models. ``quality[i, j]`` in [0, 1] is how well model j answered query i and
    ``cost[i, j]`` what it cost in USD; arrays are read-only copies."""

    query_ids: np.ndarray  # (n,) str
    texts: tuple[str, ...]  # (n,) the text a router would see
    models: tuple[str, ...]  # (m,)
    quality: np.ndarray  # (n, m) float64 in [0, 1]
    cost: np.ndarray  # (n, m) float64 USD, >= 0
    categories: np.ndarray | None = None  # (n,) str
    response_chars: np.ndarray | None = None  # (n, m) length of each model's answer in characters
    source: str = ""
    cost_note: str = ""  # how costs were obtained (real, or price table × estimated tokens)
    issues: tuple[RowIssue, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        n, m = len(self.texts), len(self.models)
        ids = np.asarray(self.query_ids, dtype=object)
        quality = np.asarray(self.quality, dtype=np.float64)
        cost = np.asarray(self.cost, dtype=np.float64)
        if ids.shape != (n,) or quality.shape != (n, m) or cost.shape != (n, m):
            raise BadRequest(
                f"outcome matrix shapes disagree: {n} texts, {m} models, ids {ids.shape}, "
                f"quality {quality.shape}, cost {cost.shape}"
            )
        if len(set(self.models)) != m:
            raise BadRequest("duplicate model names in outcome matrix")
        if n and (not np.isfinite(quality).all() or quality.min() < 0 or quality.max() > 1):
            raise BadRequest("quality must be finite and in [0, 1]")
        if n and (not np.isfinite(cost).all() or cost.min() < 0):
            raise BadRequest("cost must be finite and >= 0")
        object.__setattr__(self, "query_ids", _readonly(ids))
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "quality", _readonly(quality))
        object.__setattr__(self, "cost", _readonly(cost))
        if self.categories is not None:
            cats = np.asarray(self.categories, dtype=object)
            if cats.shape != (n,):
                raise BadRequest(f"categories shape {cats.shape} != ({n},)")
            object.__setattr__(self, "categories", _readonly(cats))
        if self.response_chars is not None:
            rc = np.asarray(self.response_chars, dtype=np.float64)
            if rc.shape != (n, m):
                raise BadRequest(f"response_chars shape {rc.shape} != ({n}, {m})")
            object.__setattr__(self, "response_chars", _readonly(rc))

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def m(self) -> int:
        return len(self.models)

    def take(self, rows: Sequence[int] | np.ndarray) -> OutcomeMatrix:
        """The rows `rows` (query indices), in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        return replace(
            self,
            query_ids=self.query_ids[idx],
            texts=tuple(self.texts[i] for i in idx),
            quality=self.quality[idx],
            cost=self.cost[idx],
            categories=None if self.categories is None else self.categories[idx],
            response_chars=None if self.response_chars is None else self.response_chars[idx],
        )

    def split(self, train_fraction: float, seed: int = 0) -> tuple[OutcomeMatrix, OutcomeMatrix]:
        """Random train/test split, stratified by category when there are categories."""
        if not 0 < train_fraction < 1:
            raise BadRequest(f"train split must be in (0, 1), got {train_fraction}")
        rng = np.random.default_rng(seed)
        groups = (
            [np.arange(self.n)]
            if self.categories is None
            else [np.flatnonzero(self.categories == c) for c in sorted(set(self.categories))]
        )
        train: list[int] = []
        test: list[int] = []
        for g in groups:
            g = rng.permutation(g)
            k = int(round(len(g) * train_fraction))
            if len(g) >= 2:
                k = min(max(k, 1), len(g) - 1)
            train.extend(g[:k].tolist())
            test.extend(g[k:].tolist())
        if not train or not test:
            raise BadRequest(f"too few queries ({self.n}) to split")
        return self.take(sorted(train)), self.take(sorted(test))

    def category_list(self) -> list[str]:
        return [] if self.categories is None else sorted(set(self.categories.tolist()))
