"""eval/training/embedding.py CachedEmbedder: each text embedded once, across instances, and the inner
backend kept."""

from __future__ import annotations

import numpy as np

from eval.training.embedding import CachedEmbedder
from router.embedder import backend_of


class _Counting:
    name, dim, backend = "test/counting", 3, "onnx"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts):
        self.seen += list(texts)
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)


def test_texts_are_embedded_once_and_the_backend_is_the_inner_one(tmp_path) -> None:
    inner = _Counting()
    cache = CachedEmbedder(inner, tmp_path)
    assert backend_of(cache) == "onnx"  # an artifact trained from the cache records the real backend
    first = cache.embed(["ab", "abc", "ab"])
    assert sorted(inner.seen) == ["ab", "abc"] and first[:, 0].tolist() == [2.0, 3.0, 2.0]
    cache.flush()
    again = CachedEmbedder(_Counting(), tmp_path)
    np.testing.assert_array_equal(again.embed(["abc", "ab"]), first[[1, 0]])
    assert again.inner.seen == []
