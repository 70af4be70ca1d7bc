"""The real all-MiniLM-L6-v2 embedder: length-bucketed batches give the same vectors, in the caller's
order, as one padded batch and as one text at a time; buckets respect the padding bound."""

from __future__ import annotations

import numpy as np

from router.embedder import PAD_SLACK
from tests.router._shared import embedder

# lengths from a few words to past the model's 256-token truncation, deliberately unsorted
TEXTS = [
    "What is 2+2?",
    "Explain, step by step and with a worked example, how the Krebs cycle produces ATP. " * 12,
    "Define entropy.",
    "A train leaves at 3pm travelling 60 km/h; a second leaves at 4pm at 90 km/h. When does it catch up?",
    "Write a Python function that merges two sorted lists into one sorted list without using sort().",
    "Which court decided Marbury v. Madison?",
    "word " * 400,
    "Why?",
]


def test_bucketed_embeddings_match_padded_and_single() -> None:
    emb = embedder()
    bucketed = emb.embed(TEXTS)
    padded = emb.embed_padded(TEXTS)
    single = np.vstack([emb.embed([t]) for t in TEXTS])
    assert bucketed.shape == (len(TEXTS), emb.dim) and bucketed.dtype == np.float32
    np.testing.assert_allclose(bucketed, padded, atol=1e-5)
    np.testing.assert_allclose(bucketed, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(bucketed, axis=1), 1.0, atol=1e-5)
    assert emb.embed([]).shape == (0, emb.dim)


def test_length_buckets_partition_and_bound_padding() -> None:
    emb = embedder()
    buckets = emb.length_buckets(TEXTS)
    assert sorted(i for b in buckets for i in b) == list(range(len(TEXTS)))
    lengths = emb._token_lengths(TEXTS)
    assert max(lengths) <= 256  # truncated as the model reads them
    for b in buckets:
        ls = [lengths[i] for i in b]
        assert ls == sorted(ls)
        # a bucket of several texts never pads past the bound; a lone text pads nothing
        assert len(b) == 1 or max(ls) * len(ls) <= PAD_SLACK * sum(ls)
    assert len(buckets) > 1  # these lengths cannot share one batch within the bound
