"""The quality head: per query, P(good answer) of every model it was trained on, and the expected
completion length where the training data had answers. Pure numpy; trained by eval/training/quality_train.py.

Scorers, by name (`SCORERS`), all over the router's sentence embedding (L2-normalised):

    knn       similarity-weighted mean quality of the k nearest training queries (cosine similarity,
              weights max(sim, 0) + 1e-6); the training embeddings and qualities are stored
    logreg    one logistic regression per model (coef (m, d), intercept (m,))
    ensemble  the mean of knn and logreg

Each model's raw score is then calibrated (Platt scaling on the logit, `a·logit(p) + b`, fitted on
held-out predictions) so that predicted qualities of different models compare on one scale.
Expected completion tokens: a ridge regression of log1p(tokens) on the embedding, per model.

The head lives in an artifact's `quality/` subfolder (no pickle):

    quality/manifest.json   format_version, method, models, embedder {name, dim}, expert_map
                            (model -> registry expert; identity when absent), prices (USD per 1M
                            tokens fitted on the training data, for calibration), strong_model,
                            defaults {lambda, ...} (from `coe router calibrate`), metrics, created_at
    quality/weights.npz     the scorer's arrays, calibration (m, 2), token ridge (d + 1, m)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from router.defaults import QUALITY_HEADS
from router.errors import ArtifactError
from router.types import QualityEstimate

QUALITY_DIR = "quality"
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
FORMAT_VERSION = 1
#: prompt tokens are estimated from the text as ceil(chars / CHARS_PER_TOKEN) (OpenAI's rule of thumb)
CHARS_PER_TOKEN = 4.0
_EPS = 1e-4


def prompt_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


class Scorer(Protocol):
    """Raw per-model quality scores in [0, 1] for (n, d) embeddings."""

    def raw(self, emb: np.ndarray) -> np.ndarray: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class KnnScorer:
    name: ClassVar[str] = "knn"
    train_emb: np.ndarray  # (N, d) float32
    train_quality: np.ndarray  # (N, m)
    k: int = 20

    def raw(self, emb: np.ndarray, batch: int = 1024) -> np.ndarray:
        k = max(1, min(self.k, len(self.train_emb)))
        out = np.empty((len(emb), self.train_quality.shape[1]))
        for s in range(0, len(emb), batch):
            sim = np.asarray(emb[s : s + batch], dtype=np.float32) @ self.train_emb.T
            idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            w = np.maximum(np.take_along_axis(sim, idx, axis=1), 0) + 1e-6
            q = self.train_quality[idx]
            out[s : s + batch] = np.einsum("nk,nkm->nm", w, q) / w.sum(axis=1, keepdims=True)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "knn_emb": self.train_emb.astype(np.float32),
            "knn_quality": self.train_quality.astype(np.float32),
            "knn_k": np.array([self.k]),
        }


@dataclass(frozen=True)
class LogRegScorer:
    name: ClassVar[str] = "logreg"
    coef: np.ndarray  # (m, d)
    intercept: np.ndarray  # (m,)

    def raw(self, emb: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(emb, dtype=np.float64) @ self.coef.T + self.intercept[None, :])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lr_coef": self.coef, "lr_intercept": self.intercept}


@dataclass(frozen=True)
class EnsembleScorer:
    name: ClassVar[str] = "ensemble"
    knn: KnnScorer
    logreg: LogRegScorer

    def raw(self, emb: np.ndarray) -> np.ndarray:
        return 0.5 * (self.knn.raw(emb) + self.logreg.raw(emb))

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.knn.arrays(), **self.logreg.arrays()}


SCORERS = QUALITY_HEADS


def scorer_from_arrays(method: str, z: Mapping[str, np.ndarray]) -> Scorer:
    def knn() -> KnnScorer:
        return KnnScorer(
            np.asarray(z["knn_emb"], dtype=np.float32),
            np.asarray(z["knn_quality"], dtype=np.float64),
            int(np.asarray(z["knn_k"])[0]),
        )

    def lr() -> LogRegScorer:
        return LogRegScorer(np.asarray(z["lr_coef"], np.float64), np.asarray(z["lr_intercept"], np.float64))

    if method == "knn":
        return knn()
    if method == "logreg":
        return lr()
    if method == "ensemble":
        return EnsembleScorer(knn(), lr())
    raise ArtifactError(f"unknown quality head method {method!r}; known: {', '.join(SCORERS)}")


@dataclass(frozen=True)
class QualityHead:
    """A trained quality head: `predict(emb)` (n, m) calibrated P(good answer), `completion_tokens(emb)`
    (n, m) or None, and `estimates(texts, emb)` keyed by registry expert name for the policies."""

    models: tuple[str, ...]
    method: str
    scorer: Scorer
    calibration: np.ndarray  # (m, 2): a, b of a·logit(raw) + b
    embedder_name: str
    embedder_dim: int
    tokens: np.ndarray | None = None  # (d + 1, m) ridge weights for log1p(completion tokens)
    expert_map: Mapping[str, str] = field(default_factory=dict)  # model -> expert (identity if absent)
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # model -> USD / 1M in, out
    strong_model: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def __post_init__(self) -> None:
        m = len(self.models)
        if self.calibration.shape != (m, 2):
            raise ArtifactError(f"quality head: calibration shape {self.calibration.shape} != ({m}, 2)")
        if self.tokens is not None and self.tokens.shape != (self.embedder_dim + 1, m):
            raise ArtifactError(f"quality head: token weights shape {self.tokens.shape}")

    # --- predictions ------------------------------------------------------------------------------
    def predict(self, emb: np.ndarray) -> np.ndarray:
        emb = np.atleast_2d(np.asarray(emb, dtype=np.float32))
        if emb.shape[1] != self.embedder_dim:
            raise ArtifactError(f"quality head expects embedding dim {self.embedder_dim}, got {emb.shape[1]}")
        z = logit(self.scorer.raw(emb))
        return sigmoid(z * self.calibration[None, :, 0] + self.calibration[None, :, 1])

    def completion_tokens(self, emb: np.ndarray) -> np.ndarray | None:
        if self.tokens is None:
            return None
        x = np.atleast_2d(np.asarray(emb, dtype=np.float64))
        pred = x @ self.tokens[:-1] + self.tokens[-1][None, :]
        return np.maximum(1.0, np.expm1(np.clip(pred, 0, 20)))

    def expert(self, model: str) -> str:
        return self.expert_map.get(model, model)

    @property
    def default_lambda(self) -> float | None:
        v = self.defaults.get("lambda")
        return None if v is None else float(v)

    def estimates(self, texts: Sequence[str], emb: np.ndarray) -> list[QualityEstimate]:
        """One QualityEstimate per text, keyed by expert name (the policies' input)."""
        q = self.predict(emb)
        toks = self.completion_tokens(emb)
        experts = [self.expert(m) for m in self.models]
        lam = self.default_lambda
        out = []
        for i, text in enumerate(texts):
            out.append(
                QualityEstimate(
                    quality=dict(zip(experts, q[i].tolist(), strict=True)),
                    completion_tokens={}
                    if toks is None
                    else dict(zip(experts, toks[i].tolist(), strict=True)),
                    prompt_tokens=prompt_tokens(text),
                    default_lambda=lam,
                    head=self.method,
                )
            )
        return out

    # --- persistence ------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "models": list(self.models),
            "embedder": {"name": self.embedder_name, "dim": self.embedder_dim},
            "expert_map": dict(self.expert_map),
            "prices": {m: {"input_per_m": p[0], "output_per_m": p[1]} for m, p in self.prices.items()},
            "strong_model": self.strong_model,
            "has_tokens": self.tokens is not None,
            "defaults": dict(self.defaults),
            "metrics": dict(self.metrics),
            "created_at": self.created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def save(self, artifact_dir: str | Path) -> Path:
        d = Path(artifact_dir) / QUALITY_DIR
        d.mkdir(parents=True, exist_ok=True)
        arrays = dict(self.scorer.arrays())
        arrays["calibration"] = self.calibration
        if self.tokens is not None:
            arrays["tokens"] = self.tokens
        np.savez(d / WEIGHTS, **arrays)  # type: ignore[arg-type]
        (d / MANIFEST).write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")
        return d


def has_quality_head(artifact_dir: str | Path) -> bool:
    return (Path(artifact_dir) / QUALITY_DIR / MANIFEST).is_file()


def load_quality_head(artifact_dir: str | Path) -> QualityHead:
    """The head in `artifact_dir/quality/`; ArtifactError naming the file when it is broken."""
    d = Path(artifact_dir) / QUALITY_DIR
    try:
        raw = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        with np.load(d / WEIGHTS, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"quality head {d}: cannot read: {exc}") from None
    try:
        if raw.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"quality head {d}: unsupported format_version {raw.get('format_version')!r}")
        prices = {
            m: (float(p["input_per_m"]), float(p["output_per_m"])) for m, p in raw.get("prices", {}).items()
        }
        return QualityHead(
            models=tuple(raw["models"]),
            method=str(raw["method"]),
            scorer=scorer_from_arrays(str(raw["method"]), arrays),
            calibration=np.asarray(arrays["calibration"], dtype=np.float64),
            embedder_name=str(raw["embedder"]["name"]),
            embedder_dim=int(raw["embedder"]["dim"]),
            tokens=np.asarray(arrays["tokens"], dtype=np.float64) if "tokens" in arrays else None,
            expert_map=dict(raw.get("expert_map") or {}),
            prices=prices,
            strong_model=str(raw.get("strong_model", "")),
            defaults=dict(raw.get("defaults") or {}),
            metrics=dict(raw.get("metrics") or {}),
            created_at=str(raw.get("created_at", "")),
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"quality head {d}: missing or malformed field {exc}") from None


def update_defaults(artifact_dir: str | Path, defaults: Mapping[str, Any]) -> Path:
    """Merge `defaults` into the head's manifest (what `coe router calibrate` stores)."""
    path = Path(artifact_dir) / QUALITY_DIR / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"quality head {path}: cannot read: {exc}") from None
    raw["defaults"] = {**(raw.get("defaults") or {}), **defaults}
    path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return path
