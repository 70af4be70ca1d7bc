"""Helpers shared by the router and eval tests: one embedder per test session, shared-data paths."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MMLU_DIR = REPO.parent / "shared" / "data" / "mmlu_pro" / "eval_results"
MMLU_ZIP = MMLU_DIR / "model_outputs_Yi-6B_5shots.zip"
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_ARTIFACT = REPO / "router" / "artifacts" / "default"

needs_mmlu = pytest.mark.skipif(not MMLU_ZIP.is_file(), reason="../shared/data/mmlu_pro is absent")
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")


@functools.cache
def embedder():
    from router.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("default", threads=2)


@functools.cache
def default_embedder():
    """The bundled artifact's own encoder on torch (router.core.artifact_embedder: the bundled MiniLM,
    with the artifact's fine-tuned layers when it has them), what its heads must be used with."""
    from router.core import artifact_embedder

    return artifact_embedder(DEFAULT_ARTIFACT, threads=2)


@functools.cache
def mmlu_examples():
    from eval.data.datasets import load_mmlu_pro

    return tuple(load_mmlu_pro(MMLU_ZIP))
