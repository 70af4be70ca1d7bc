"""The ONNX backends compute the torch backend's vectors and decisions: same tokens, cosine >= 0.999 for
the fp32 export, the same top-1 category on MMLU-Pro questions; the export is made once per cache
folder and reused; running it needs no torch; unknown backends fail with the known ones listed; any
backend loads any artifact of the same embedding model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from router.classifier import MANIFEST
from router.core import Router
from router.embedder import BACKENDS, DEFAULT_MODEL_NAME, make_embedder
from router.errors import ArtifactError, UnknownBackend
from router.onnx_embedder import FP32_FILE, INT8_FILE, OnnxEmbedder, ensure_exported
from tests.router._shared import REPO, default_embedder, embedder, mmlu_examples, needs_mmlu
from tests.router.test_embedder import TEXTS

ARTIFACT = REPO / "router" / "artifacts" / "default"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def onnx(cache_dir: Path) -> OnnxEmbedder:
    """One fp32 export per test session (tens of seconds)."""
    return OnnxEmbedder("default", cache_dir=cache_dir, threads=2)


@pytest.fixture(scope="session")
def onnx_int8(cache_dir: Path, onnx: OnnxEmbedder) -> OnnxEmbedder:
    """Quantised from the fp32 export above, in the same cache folder."""
    return OnnxEmbedder("default", cache_dir=cache_dir, quantized=True, threads=2)


def test_same_tokens_and_vectors_as_torch(onnx: OnnxEmbedder) -> None:
    torch_emb = embedder()
    assert (onnx.name, onnx.dim, onnx.backend) == (DEFAULT_MODEL_NAME, torch_emb.dim, "onnx")
    st_ids = torch_emb._model.tokenizer(TEXTS, truncation=True, max_length=256)["input_ids"]
    assert [e.ids for e in onnx._encode(TEXTS)] == st_ids  # incl. the 256-token truncation
    ours, ref = onnx.embed(TEXTS), torch_emb.embed(TEXTS)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert (ours * ref).sum(axis=1).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # length buckets change nothing: one padded call and one text at a time give the same vectors
    np.testing.assert_allclose(ours, onnx.embed_padded(TEXTS), atol=1e-5)
    np.testing.assert_allclose(ours, np.vstack([onnx.embed([t]) for t in TEXTS]), atol=1e-5)
    assert onnx.embed([]).shape == (0, onnx.dim)


@pytest.mark.shared_data
@needs_mmlu
def test_backends_agree_on_mmlu_questions(cache_dir: Path) -> None:
    texts = [e.text for e in mmlu_examples()[:200]] + TEXTS
    # the artifact's own encoder on each backend (its tuned layers, when it has them)
    torch_router = Router.load(ARTIFACT, embedder=default_embedder())
    ref_emb = default_embedder().embed(texts)
    ref = torch_router.probabilities(texts).argmax(axis=1)
    bounds = (("onnx", 0.999, 0.999, 0.99), ("onnx-int8", 0.95, 0.985, 0.95))
    for backend, cosine_min, cosine_mean, agreement_min in bounds:
        router = Router.load(ARTIFACT, backend=backend, cache_dir=cache_dir, threads=2)
        emb = router.embedder
        assert emb is not None and emb.name == default_embedder().name
        cos = (emb.embed(texts) * ref_emb).sum(axis=1)
        agreement = float((router.probabilities(texts).argmax(axis=1) == ref).mean())
        # int8 is looser by design (bench/embedder_backends.py measures it on the held-out split);
        # its bounds catch a broken quantisation (per-tensor weights give a mean cosine of 0.96)
        assert cos.min() >= cosine_min and cos.mean() >= cosine_mean, (backend, cos.min(), cos.mean())
        assert agreement >= agreement_min, (backend, agreement)


def test_export_is_cached(cache_dir: Path, onnx: OnnxEmbedder, onnx_int8: OnnxEmbedder) -> None:
    folder = onnx.path.parent
    assert onnx.path.name == FP32_FILE and onnx_int8.path == folder / INT8_FILE
    assert folder.parent == cache_dir / "onnx"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = make_embedder("default", "onnx", threads=1, cache_dir=cache_dir)
    again8 = make_embedder("default", "onnx-int8", threads=1, cache_dir=cache_dir)
    assert isinstance(again, OnnxEmbedder) and again.path == onnx.path
    assert isinstance(again8, OnnxEmbedder) and again8.path == onnx_int8.path
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing re-exported
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    np.testing.assert_allclose(again.embed(TEXTS[:3]), onnx.embed(TEXTS[:3]), atol=1e-6)


def test_a_failed_export_is_typed_and_leaves_no_file(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="cannot export the embedder to ONNX"):
        ensure_exported(empty, tmp_path / "cache", quantized=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".lock"]  # no partial model.onnx


def test_a_replica_waiting_for_the_lock_reuses_the_export(tmp_path: Path, onnx: OnnxEmbedder) -> None:
    """Another process holds the lock and finishes the export meanwhile: the waiter must not export
    again (from this empty source folder it would fail)."""
    from filelock import FileLock

    empty, target = tmp_path / "not-a-model", tmp_path / "cache"
    empty.mkdir()
    target.mkdir()
    got: list[Path] = []
    with FileLock(str(target / ".lock")):
        waiter = threading.Thread(target=lambda: got.append(ensure_exported(empty, target, quantized=False)))
        waiter.start()
        time.sleep(0.5)  # lets the waiter reach the lock; if it has not, the test passes the easy way
        shutil.copyfile(onnx.path, target / FP32_FILE)
    waiter.join()
    assert got == [target / FP32_FILE]


def test_running_an_export_imports_no_torch(cache_dir: Path, onnx: OnnxEmbedder) -> None:
    code = (
        "import sys; from router.embedder import make_embedder; "
        f"e = make_embedder('default', 'onnx', threads=1, cache_dir={str(cache_dir)!r}); "
        "assert e.embed(['What is 2+2?']).shape == (1, 384); "
        "bad = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackend, match="'tensorrt'; known: torch, onnx, onnx-int8") as exc:
        make_embedder("default", "tensorrt", cache_dir=tmp_path)
    assert exc.value.status == 400 and BACKENDS == ("torch", "onnx", "onnx-int8")
    # refused before anything loads, even for an artifact that needs no embedder
    with pytest.raises(UnknownBackend):
        Router.load(tmp_path / "no-such-artifact", backend="onnx-fp16")
    assert not list(tmp_path.iterdir())


def _artifact_copy(dst: Path, **embedder_fields: object) -> Path:
    dst.mkdir()
    for f in ARTIFACT.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    raw = json.loads((dst / MANIFEST).read_text())
    raw["embedder"].update(embedder_fields)
    (dst / MANIFEST).write_text(json.dumps(raw))
    return dst


def test_any_backend_loads_any_artifact_of_its_model(
    tmp_path: Path, cache_dir: Path, onnx: OnnxEmbedder
) -> None:
    raw = json.loads((ARTIFACT / MANIFEST).read_text())
    assert raw["embedder"]["validated_backend"] == "torch"
    int8_validated = _artifact_copy(tmp_path / "int8", validated_backend="onnx-int8")
    router = Router.load(int8_validated, backend="onnx", cache_dir=cache_dir, threads=2)
    assert router.classifier.manifest is not None
    assert router.classifier.manifest.validated_backend == "onnx-int8"
    assert router.probabilities(["What is 2+2?"]).shape == (1, len(router.categories))
    # the model, not the backend, must match
    other_model = _artifact_copy(tmp_path / "other", name="someone/else-L6")
    with pytest.raises(ArtifactError, match="embedding model mismatch"):
        Router.load(other_model, embedder=onnx)


@pytest.mark.shared_data
@needs_mmlu
def test_training_records_the_backend_it_validated_with(tmp_path: Path, onnx: OnnxEmbedder) -> None:
    from eval.data.datasets import sample
    from eval.training.train import train_router

    exs = sample(mmlu_examples(), 150, seed=1)
    train_router(exs, out=tmp_path, embedder=onnx, val_fraction=0.2, kind="embedding", show_progress=False)
    raw = json.loads((tmp_path / MANIFEST).read_text())
    assert raw["embedder"] == {"name": DEFAULT_MODEL_NAME, "dim": 384, "validated_backend": "onnx"}
    assert Router.load(tmp_path, embedder=embedder()).classifier.manifest is not None  # torch loads it too
