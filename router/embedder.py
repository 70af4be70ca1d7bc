"""Sentence embeddings. `Embedder` is the narrow protocol the router needs. Two adapters give the same
vectors: sentence-transformers on torch here, ONNX Runtime in router/onnx_embedder.py; each imports its
framework lazily, on construction, so `import router` stays framework-free. `make_embedder` picks one
by backend name (`BACKENDS`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from router.embedding_common import (  # noqa: F401  (re-exported: callers read them here)
    DEFAULT_MODEL,
    DEFAULT_MODEL_NAME,
    PAD_SLACK,
    EmbedderBase,
    default_threads,
    l2_normalise,
    length_buckets,
    resolve_model,
)
from router.errors import ArtifactError, UnknownBackend
from router.tuned_encoder import TunedLayers

#: embedder backends: sentence-transformers on torch, its ONNX export (fp32), that export quantised to int8
BACKENDS = ("torch", "onnx", "onnx-int8")


class Embedder(Protocol):
    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, each row L2-normalised."""
        ...


def check_backend(backend: str) -> str:
    """`backend` if it names a known backend, else UnknownBackend listing the known ones."""
    if backend not in BACKENDS:
        raise UnknownBackend(f"unknown embedder backend {backend!r}; known: {', '.join(BACKENDS)}")
    return backend


def make_embedder(
    model: str = DEFAULT_MODEL,
    backend: str = "torch",
    *,
    threads: int = 0,
    cache_dir: str | Path | None = None,
    tuned: TunedLayers | None = None,
) -> Embedder:
    """The embedder for `model` on `backend`. The ONNX backends export the model into `cache_dir`
    (default ~/.cache/coe-router) on first use and reuse the export afterwards. With `tuned` (an
    artifact's fine-tuned layers, router/tuned_encoder.py) the bundled model with those layers: its
    exports are keyed by the layers' sha256, never shared with the frozen model's."""
    check_backend(backend)
    if tuned is not None and resolve_model(model)[1] != DEFAULT_MODEL_NAME:
        raise ArtifactError(f"tuned encoder layers fit the bundled {DEFAULT_MODEL_NAME} only, not {model!r}")
    if backend == "torch":
        return SentenceTransformerEmbedder(model, threads=threads, tuned=tuned)
    from router.onnx_embedder import OnnxEmbedder

    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "coe-router"
    return OnnxEmbedder(
        model, cache_dir=cache, quantized=backend == "onnx-int8", threads=threads, tuned=tuned
    )


def backend_of(embedder: Embedder) -> str:
    """The backend name an embedder reports, "custom" for embedders outside this module's factory."""
    return str(getattr(embedder, "backend", "custom"))


class SentenceTransformerEmbedder(EmbedderBase):
    """Any sentence-transformers model by path or name; "default" loads the packaged MiniLM offline, with
    `tuned` an artifact's fine-tuned layers in place of its own (then named `tuned.name`)."""

    backend = "torch"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        threads: int = 0,
        batch_size: int = 64,
        device: str = "cpu",
        tuned: TunedLayers | None = None,
    ) -> None:
        path, self._name = resolve_model(model)
        self.threads = threads if threads > 0 else default_threads()
        self.batch_size = batch_size
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ArtifactError(f"cannot load the embedder: {exc}") from exc
        # torch defaults to every core; the router shares its node with other replicas.
        torch.set_num_threads(self.threads)
        try:
            self._model: Any = SentenceTransformer(path, device=device)
        except Exception as exc:  # noqa: BLE001 - any loader failure is an unusable embedder
            raise ArtifactError(f"cannot load embedding model {model!r}: {exc}") from exc
        if tuned is not None:
            tuned.apply(self._model[0].auto_model)
            self._model.max_seq_length = tuned.max_seq_length
            self._name = tuned.name
        # renamed in sentence-transformers 5.x; the old name warns
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:  # pragma: no cover - older sentence-transformers
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # pragma: no cover - exotic models
            dim = int(self._model.encode(["x"]).shape[1])
        self._ready(dim)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self._model.encode(
                texts,
                batch_size=max(len(texts), 1),
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            ),
            dtype=np.float32,
        )

    def _token_lengths(self, texts: list[str]) -> list[int]:
        """Token counts as the model will see them (truncated); character counts if no tokenizer."""
        tok = getattr(self._model, "tokenizer", None)
        if tok is None:
            return [len(t) for t in texts]
        max_len = getattr(self._model, "max_seq_length", None) or None
        ids = tok(texts, add_special_tokens=True, truncation=max_len is not None, max_length=max_len)
        return [len(x) for x in ids["input_ids"]]

    def length_buckets(self, texts: list[str]) -> list[list[int]]:
        """Indices of `texts` grouped into sub-batches of similar token length.

        On CPU a batch costs roughly (texts x longest text): every text is padded to the longest one
        in its batch, and padded positions cost as much as real ones. Questions vary a lot in length
        (MMLU-Pro: median 46 tokens, 90th percentile 141, max 256 after truncation), so one padded
        batch of 32 spent most of its work on padding, and batched throughput fell below batch-1
        throughput (bench/routing_overhead.py measures both ways).
        Texts are sorted by length and a bucket closes when padding would exceed PAD_SLACK of its
        real tokens, or when it holds `batch_size` texts."""
        return length_buckets(self._token_lengths(texts), self.batch_size)

    def embed_padded(self, texts: Sequence[str]) -> np.ndarray:
        """All texts in one model call, each padded to the longest: what embed() did before length
        buckets for calls of up to `batch_size` texts (the benchmarks compare the two)."""
        if len(texts) == 0:
            return self._none()
        with self._lock:
            return np.ascontiguousarray(self._encode(list(texts)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) == 0:
            return self._none()
        with self._lock:
            if len(texts) == 1:
                return np.ascontiguousarray(self._encode(texts))
            out = np.empty((len(texts), self._dim), dtype=np.float32)
            for bucket in self.length_buckets(texts):
                out[bucket] = self._encode([texts[i] for i in bucket])
        return out
