"""The learned skill classifier and its artifact directory.

A `SkillClassifier` is a calibrated log-linear ensemble of linear heads over two views of a query:
  * semantic: the sentence embedding (all-MiniLM-L6-v2 by default);
  * lexical:  TF-IDF over word 1–2-grams and character 2–5-grams of the text.
P(c | x) = softmax( Σ_h w_h · log softmax(z_h(x)) / T ), the weights w_h and the temperature T fitted
on held-out predictions (eval/training/train.py). Either head may be absent (embedding-only or TF-IDF-only).

Nested (optional, `model.nested {weights, inner}`): a second mixture, with its own weights, decides
between each outer category and the *inner* group as a whole; the first mixture shares the group's
mass among the inner categories: P(c) = P_out(c) for an outer c, P_out(inner)·P_in(c | inner) for an
inner one. The bundled router nests the 13 exam subjects: whether a prompt is an exam subject at all,
or coding, maths, writing... is decided by the mixture that generalises across sources (more weight on
the embedding), which subject by the one that is most accurate on exam questions (docs/router.md).

The artifact holds no pickle: arrays in `model.npz`, vocabularies and settings in `manifest.json`,
so loading an artifact never executes code from it.

    <dir>/manifest.json   format_version, version, categories, embedder {name, dim, validated_backend},
                          fingerprint,
                          metrics, created_at, model {heads, weights, temperature, nested, tfidf settings}
    <dir>/model.npz       head coefficients and intercepts, TF-IDF idf vectors
    <dir>/vocab.json      TF-IDF vocabularies (term lists in column order)
    <dir>/reference.npz   a small sample of training embeddings per category (float16), for add-category
    <dir>/prototypes.npz  example embeddings of categories added from examples (router/prototypes.py)
    <dir>/encoder.npz     the fine-tuned top layers of the artifact's own encoder, when the manifest has an
                          `encoder` entry (router/tuned_encoder.py)

`categories` in the manifest lists the trained categories first, then the added ones in the order they
were added (`model.prototypes`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import ArtifactError
from router.prototypes import PrototypeHead, apply_heads

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.npz"
VOCAB_FILE = "vocab.json"
REFERENCE_FILE = "reference.npz"
PROTOTYPES_FILE = "prototypes.npz"
ENCODER_FILE = "encoder.npz"

#: TF-IDF settings (the vectorisers are rebuilt from these and the stored vocabularies)
_TFIDF_COMMON: dict[str, Any] = {"sublinear_tf": True, "lowercase": True, "strip_accents": "unicode"}
WORD_SETTINGS: dict[str, Any] = {"analyzer": "word", "ngram_range": (1, 2), "min_df": 2, **_TFIDF_COMMON}
CHAR_SETTINGS: dict[str, Any] = {"analyzer": "char_wb", "ngram_range": (2, 5), "min_df": 3, **_TFIDF_COMMON}


def fingerprint(texts: Sequence[str], labels: Sequence[str]) -> str:
    """sha256 over the training texts and labels, in order."""
    h = hashlib.sha256()
    for t, y in zip(texts, labels, strict=True):
        h.update(t.encode("utf-8"))
        h.update(b"\x1f")
        h.update(y.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(z))


@dataclass(frozen=True, slots=True)
class LinearHead:
    """Multinomial logistic regression, stored as plain arrays (coef: (C, d), intercept: (C,))."""

    coef: np.ndarray
    intercept: np.ndarray

    def log_proba(self, x: Any) -> np.ndarray:
        z = x @ self.coef.T
        z = np.asarray(z, dtype=np.float64) + self.intercept
        return log_softmax(z)


class TfidfFeatures:
    """Word and character TF-IDF, rebuilt from stored vocabularies (scikit-learn imported lazily)."""

    def __init__(
        self, word_vocab: Sequence[str], word_idf: np.ndarray, char_vocab: Sequence[str], char_idf: np.ndarray
    ) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.word_vocab, self.char_vocab = list(word_vocab), list(char_vocab)
        self._vecs = []
        for settings, vocab, idf in (
            (WORD_SETTINGS, self.word_vocab, word_idf),
            (CHAR_SETTINGS, self.char_vocab, char_idf),
        ):
            params = {k: v for k, v in settings.items() if k != "min_df"}
            vec = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(vocab)}, dtype=np.float32, **params)
            vec.idf_ = np.asarray(idf, dtype=np.float64)
            self._vecs.append(vec)

    @property
    def idfs(self) -> tuple[np.ndarray, np.ndarray]:
        return self._vecs[0].idf_, self._vecs[1].idf_

    def transform(self, texts: Sequence[str]) -> Any:
        import sklearn
        from scipy import sparse

        # the vectorizers were validated when built; per-call parameter and finiteness checks cost
        # ~0.4 ms of a ~1.5 ms classify at batch 1 (measured on the default artifact)
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            blocks = [v.transform(list(texts)) for v in self._vecs]
        return sparse.hstack(blocks, format="csr") * (0.5**0.5)

    @classmethod
    def fit(cls, texts: Sequence[str], max_word: int = 30000, max_char: int = 30000) -> TfidfFeatures:
        from sklearn.feature_extraction.text import TfidfVectorizer

        fitted = []
        for settings, cap in ((WORD_SETTINGS, max_word), (CHAR_SETTINGS, max_char)):
            min_df = settings["min_df"] if len(texts) >= 200 else 1
            vec = TfidfVectorizer(max_features=cap, dtype=np.float32, **{**settings, "min_df": min_df})
            vec.fit(list(texts))
            vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
            fitted.append((vocab, vec.idf_))
        return cls(fitted[0][0], fitted[0][1], fitted[1][0], fitted[1][1])


@dataclass(frozen=True, slots=True)
class Manifest:
    categories: tuple[str, ...]
    embedder_name: str
    embedder_dim: int
    fingerprint: str
    version: str
    created_at: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    training: Mapping[str, Any] = field(default_factory=dict)
    #: the embedder backend the metrics were measured with (router.embedder.BACKENDS); informative only:
    #: every backend computes the same model, so any of them may load the artifact
    validated_backend: str = "torch"
    #: how the service routes with this artifact when neither the request nor the settings say:
    #: {"threshold": the category policy's fallback confidence, "chosen_by": how it was chosen}
    routing: Mapping[str, Any] = field(default_factory=dict)
    #: the artifact's own fine-tuned encoder layers (router/tuned_encoder.py); empty: the frozen model
    encoder: Mapping[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float | None:
        """The fallback threshold chosen for this artifact (None: the artifact records none)."""
        t = self.routing.get("threshold")
        return None if t is None else float(t)

    def to_json(self, model: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "version": self.version,
            "created_at": self.created_at,
            "categories": list(self.categories),
            "embedder": {
                "name": self.embedder_name,
                "dim": self.embedder_dim,
                "validated_backend": self.validated_backend,
            },
            "fingerprint": self.fingerprint,
            "metrics": dict(self.metrics),
            "training": dict(self.training),
            **({"routing": dict(self.routing)} if self.routing else {}),
            **({"encoder": dict(self.encoder)} if self.encoder else {}),
            "model": dict(model),
        }


@dataclass(frozen=True, slots=True)
class Nested:
    """The outer mixture's head weights and the inner categories (see the module docstring)."""

    weights: tuple[float, float]
    inner: tuple[str, ...]


def nest(p_out: np.ndarray, p_in: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """P_out for the outer columns; the inner group's P_out mass shared by P_in among `inner` columns."""
    out = p_out.copy()
    share = p_in[:, inner] / np.maximum(p_in[:, inner].sum(axis=1, keepdims=True), 1e-300)
    out[:, inner] = p_out[:, inner].sum(axis=1, keepdims=True) * share
    return out


class SkillClassifier:
    """P(category | query) from the query text and its embedding."""

    def __init__(
        self,
        categories: Sequence[str],
        *,
        embedding_head: LinearHead | None = None,
        lexical: tuple[TfidfFeatures, LinearHead] | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
        temperature: float = 1.0,
        manifest: Manifest | None = None,
        prototypes: Sequence[PrototypeHead] = (),
        reference: tuple[np.ndarray, np.ndarray] | None = None,
        nested: Nested | None = None,
    ) -> None:
        if embedding_head is None and lexical is None:
            raise ValueError("a SkillClassifier needs at least one head")
        if nested is not None and (embedding_head is None or lexical is None):
            raise ValueError("a nested classifier needs both heads")
        if nested is not None and (len(nested.inner) < 2 or not set(nested.inner) <= set(categories)):
            raise ValueError(f"nested.inner {list(nested.inner)} must be 2 or more of the categories")
        if prototypes and embedding_head is None:
            raise ValueError("categories added from examples need an embedding head")
        #: the categories the linear heads were trained on; `categories` adds the prototype heads' ones
        self.base_categories = tuple(categories)
        self.prototypes = tuple(prototypes)
        self.categories = self.base_categories + tuple(h.category for h in self.prototypes)
        #: (embeddings (n, d) float16, indices into base_categories): calibration prompts for add-category
        self.reference = reference
        self.embedding_head = embedding_head
        self.lexical = lexical
        self.weights = (float(weights[0]), float(weights[1]))
        self.temperature = float(temperature)
        self.manifest = manifest
        self.nested = nested
        self._inner = (
            None if nested is None else np.array([self.base_categories.index(c) for c in nested.inner])
        )

    @property
    def kind(self) -> str:
        if self.embedding_head is not None and self.lexical is not None:
            return "hybrid"
        return "embedding" if self.embedding_head is not None else "tfidf"

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest else "unsaved"

    @property
    def needs_embeddings(self) -> bool:
        return self.embedding_head is not None

    @property
    def embedding_dim(self) -> int | None:
        return None if self.embedding_head is None else int(self.embedding_head.coef.shape[1])

    def head_log_probas(self, texts: Sequence[str], embeddings: np.ndarray | None) -> list[np.ndarray]:
        """Per-head log-probabilities, in (embedding, lexical) order; absent heads are skipped."""
        out = []
        if self.embedding_head is not None:
            if embeddings is None:
                raise ValueError("this classifier needs embeddings")
            out.append(self.embedding_head.log_proba(np.asarray(embeddings, dtype=np.float32)))
        if self.lexical is not None:
            feats, head = self.lexical
            out.append(head.log_proba(feats.transform(texts)))
        return out

    def combine_inner(self, logps: Sequence[np.ndarray]) -> np.ndarray:
        """The ensemble's own mixture (the inner one when nested), before any nesting."""
        ws = [
            w for w, h in zip(self.weights, (self.embedding_head, self.lexical), strict=True) if h is not None
        ]
        z = sum(w * lp for w, lp in zip(ws, logps, strict=True))
        return softmax(np.asarray(z) / self.temperature)

    def combine(self, logps: Sequence[np.ndarray]) -> np.ndarray:
        """P(category) from the per-head log-probabilities (head_log_probas), nested when configured."""
        probs = self.combine_inner(logps)
        if self.nested is None or self._inner is None:
            return probs
        (a, b), (sem, lex) = self.nested.weights, logps
        return nest(softmax((a * sem + b * lex) / self.temperature), probs, self._inner)

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        """(n, C) calibrated probabilities, columns in `self.categories` order."""
        n = len(texts) if texts is not None else len(embeddings)  # type: ignore[arg-type]
        if n == 0:
            return np.zeros((0, len(self.categories)), dtype=np.float64)
        probs = self.combine(self.head_log_probas(texts, embeddings))
        return apply_heads(probs, embeddings, self.prototypes)

    def predict(self, texts: Sequence[str], embeddings: np.ndarray | None) -> list[str]:
        p = self.predict_proba(texts, embeddings)
        return [self.categories[i] for i in p.argmax(axis=1)]

    # --- artifact -------------------------------------------------------------------------------
    def save(self, directory: str | Path, manifest: Manifest | None = None) -> Path:
        manifest = manifest or self.manifest
        if manifest is None:
            raise ValueError("save needs a manifest")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        if self.embedding_head is not None:
            arrays["emb_coef"] = self.embedding_head.coef.astype(np.float32)
            arrays["emb_intercept"] = self.embedding_head.intercept.astype(np.float64)
        vocab: dict[str, list[str]] = {}
        if self.lexical is not None:
            feats, head = self.lexical
            arrays["lex_coef"] = head.coef.astype(np.float32)
            arrays["lex_intercept"] = head.intercept.astype(np.float64)
            arrays["word_idf"], arrays["char_idf"] = (a.astype(np.float32) for a in feats.idfs)
            vocab = {"word": feats.word_vocab, "char": feats.char_vocab}
        model: dict[str, Any] = {
            "kind": self.kind,
            "file": MODEL_FILE,
            "weights": list(self.weights),
            "temperature": self.temperature,
            **(
                {"nested": {"weights": list(self.nested.weights), "inner": list(self.nested.inner)}}
                if self.nested is not None
                else {}
            ),
            "word_settings": _jsonable(WORD_SETTINGS),
            "char_settings": _jsonable(CHAR_SETTINGS),
        }
        np.savez_compressed(d / MODEL_FILE, **arrays)  # type: ignore[arg-type]
        for name, present in (
            (REFERENCE_FILE, self.reference),
            (PROTOTYPES_FILE, self.prototypes),
            (ENCODER_FILE, manifest.encoder),  # written beside the heads by the trainer (tuned_encoder.py)
        ):
            if not present and (d / name).exists():
                (d / name).unlink()
        if self.reference is not None:
            np.savez_compressed(d / REFERENCE_FILE, emb=self.reference[0], label=self.reference[1])
            model["reference"] = {"file": REFERENCE_FILE, "n": int(len(self.reference[1]))}
        if self.prototypes:
            protos = {f"examples_{i}": h.examples.astype(np.float32) for i, h in enumerate(self.prototypes)}
            np.savez_compressed(d / PROTOTYPES_FILE, **protos)  # type: ignore[arg-type]
            model["prototypes"] = [
                {"category": h.category, "k": h.k, "slope": h.slope, "bias": h.bias, "n": len(h.examples)}
                for h in self.prototypes
            ]
        if vocab:
            (d / VOCAB_FILE).write_text(
                json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
            )
        elif (d / VOCAB_FILE).exists():
            (d / VOCAB_FILE).unlink()
        (d / MANIFEST).write_text(json.dumps(manifest.to_json(model), indent=2) + "\n", encoding="utf-8")
        self.manifest = manifest
        return d


def _jsonable(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def new_manifest(
    *,
    categories: Sequence[str],
    embedder_name: str,
    embedder_dim: int,
    texts: Sequence[str],
    labels: Sequence[str],
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    version: str | None = None,
    validated_backend: str = "torch",
    routing: Mapping[str, Any] | None = None,
    encoder: Mapping[str, Any] | None = None,
) -> Manifest:
    fp = fingerprint(texts, labels)
    now = datetime.now(UTC)
    # the data's fingerprint and the recipe: a new recipe on the same data is a new version
    recipe = hashlib.sha256((fp + json.dumps(dict(training or {}), sort_keys=True, default=str)).encode())
    return Manifest(
        categories=tuple(categories),
        embedder_name=embedder_name,
        embedder_dim=int(embedder_dim),
        fingerprint=fp,
        created_at=now.isoformat(timespec="seconds"),
        version=version or f"{now:%Y%m%d}-{recipe.hexdigest()[:8]}",
        metrics=dict(metrics or {}),
        training=dict(training or {}),
        validated_backend=validated_backend,
        routing=dict(routing or {}),
        encoder=dict(encoder or {}),
    )


def load_artifact(directory: str | Path, expected_dim: int | None = None) -> SkillClassifier:
    """Load and validate an artifact directory; every problem is an ArtifactError naming it."""
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(f"router artifact not found: {d} is not a directory")
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"router artifact {d}: missing {MANIFEST}")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"router artifact {d}: corrupt {MANIFEST} ({exc})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"router artifact {d}: corrupt {MANIFEST} (not a JSON object)")
    fv = raw.get("format_version")
    if fv != FORMAT_VERSION:
        raise ArtifactError(
            f"router artifact {d}: unknown format_version {fv!r} (this build reads {FORMAT_VERSION})"
        )
    try:
        categories = tuple(str(c) for c in raw["categories"])
        emb = raw["embedder"]
        manifest = Manifest(
            categories=categories,
            embedder_name=str(emb["name"]),
            embedder_dim=int(emb["dim"]),
            fingerprint=str(raw["fingerprint"]),
            version=str(raw["version"]),
            created_at=str(raw["created_at"]),
            metrics=dict(raw.get("metrics") or {}),
            training=dict(raw.get("training") or {}),
            # artifacts from before the ONNX backends were all validated on torch
            validated_backend=str(emb.get("validated_backend", "torch")),
            routing=dict(raw.get("routing") or {}),
            encoder=dict(raw.get("encoder") or {}),
        )
        if manifest.threshold is not None and not 0.0 <= manifest.threshold <= 1.0:
            raise ValueError(f"routing.threshold {manifest.threshold} is not in [0, 1]")
        model = raw["model"]
        kind = str(model["kind"])
        weights = (float(model["weights"][0]), float(model["weights"][1]))
        temperature = float(model["temperature"])
        nested = None
        if model.get("nested") is not None:
            nw = model["nested"]["weights"]
            nested = Nested((float(nw[0]), float(nw[1])), tuple(str(c) for c in model["nested"]["inner"]))
            if not all(math.isfinite(w) for w in nested.weights):
                raise ValueError(f"nested weights {nested.weights} are not finite")
        proto_specs = list(model.get("prototypes") or [])
        added = [str(p["category"]) for p in proto_specs]
        if added != list(categories[len(categories) - len(added) :]):
            raise ValueError(f"model.prototypes {added} are not the last categories")
        base = categories[: len(categories) - len(added)]
        if nested is not None and (
            kind != "hybrid" or len(nested.inner) < 2 or not set(nested.inner) <= set(base)
        ):
            raise ValueError(
                f"model.nested.inner {list(nested.inner)} must be 2 or more trained categories of a hybrid"
            )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ArtifactError(f"router artifact {d}: {MANIFEST} lacks or mangles a field ({exc!r})") from None
    if len(base) < 2 or not math.isfinite(temperature) or temperature <= 0:
        raise ArtifactError(
            f"router artifact {d}: {MANIFEST} has fewer than 2 categories or a bad temperature"
        )
    if kind not in ("hybrid", "embedding", "tfidf"):
        raise ArtifactError(f"router artifact {d}: unknown model kind {kind!r}")
    if expected_dim is not None and kind != "tfidf" and manifest.embedder_dim != expected_dim:
        raise ArtifactError(
            f"router artifact {d}: embedding dimension mismatch: trained with {manifest.embedder_name} "
            f"(dim {manifest.embedder_dim}), the embedder gives dim {expected_dim}"
        )
    fpath = d / MODEL_FILE
    if not fpath.is_file():
        raise ArtifactError(f"router artifact {d}: missing model file {MODEL_FILE}")
    try:
        with np.load(fpath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip, npy and IO errors all mean a corrupt file
        raise ArtifactError(f"router artifact {d}: corrupt model file {MODEL_FILE} ({exc})") from None
    C = len(base)
    try:
        emb_head = lexical = None
        if kind in ("hybrid", "embedding"):
            emb_head = LinearHead(arrays["emb_coef"], arrays["emb_intercept"])
            if emb_head.coef.shape != (C, manifest.embedder_dim) or emb_head.intercept.shape != (C,):
                raise ValueError(
                    f"embedding head shape {emb_head.coef.shape} != ({C}, {manifest.embedder_dim})"
                )
        if kind in ("hybrid", "tfidf"):
            vpath = d / VOCAB_FILE
            if not vpath.is_file():
                raise ArtifactError(f"router artifact {d}: missing {VOCAB_FILE}")
            vocab = json.loads(vpath.read_text(encoding="utf-8"))
            feats = TfidfFeatures(vocab["word"], arrays["word_idf"], vocab["char"], arrays["char_idf"])
            head = LinearHead(arrays["lex_coef"], arrays["lex_intercept"])
            n_feat = len(feats.word_vocab) + len(feats.char_vocab)
            if head.coef.shape != (C, n_feat) or head.intercept.shape != (C,):
                raise ValueError(f"lexical head shape {head.coef.shape} != ({C}, {n_feat})")
            lexical = (feats, head)
        reference = None
        if "reference" in model:
            with np.load(d / REFERENCE_FILE, allow_pickle=False) as z:
                reference = (z["emb"], z["label"])
        prototypes = []
        if proto_specs:
            if emb_head is None:
                raise ValueError("categories added from examples need an embedding head")
            with np.load(d / PROTOTYPES_FILE, allow_pickle=False) as z:
                for i, p in enumerate(proto_specs):
                    ex = np.asarray(z[f"examples_{i}"], dtype=np.float32)
                    if ex.ndim != 2 or ex.shape[1] != manifest.embedder_dim:
                        raise ValueError(f"prototype {p['category']!r} examples shape {ex.shape}")
                    prototypes.append(
                        PrototypeHead(
                            str(p["category"]), ex, int(p["k"]), float(p["slope"]), float(p["bias"])
                        )
                    )
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"router artifact {d}: corrupt model ({type(exc).__name__}: {exc})") from None
    return SkillClassifier(
        base,
        embedding_head=emb_head,
        lexical=lexical,
        weights=weights,
        temperature=temperature,
        manifest=manifest,
        prototypes=prototypes,
        reference=reference,
        nested=nested,
    )
