"""SkillClassifier artifact round trip and corruption handling (synthetic vectors, no embedder)."""

import json

import numpy as np
import pytest

from eval.training.train import fit_classifier
from router.classifier import MANIFEST, MODEL_FILE, VOCAB_FILE, load_artifact, new_manifest
from router.errors import ArtifactError

DIM = 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"] * 40
    centers = {c: rng.normal(size=DIM) for c in "abc"}
    emb = np.array([centers[y] + 0.3 * rng.normal(size=DIM) for y in labels], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = [f"token{y} filler{i % 7}" for i, y in enumerate(labels)]
    clf = fit_classifier(texts, labels, embedder=None, embeddings=emb, kind="hybrid")
    manifest = new_manifest(
        categories=clf.categories,
        embedder_name="test/dummy",
        embedder_dim=DIM,
        texts=texts,
        labels=labels,
        metrics={"accuracy": 1.0},
    )
    out = tmp_path_factory.mktemp("artifact")
    clf.save(out, manifest)
    return clf, out, texts, emb


def test_round_trip(trained):
    clf, out, texts, emb = trained
    loaded = load_artifact(out, expected_dim=DIM)
    assert loaded.categories == ("a", "b", "c")
    assert loaded.kind == "hybrid"
    assert loaded.version == clf.version
    p1, p2 = clf.predict_proba(texts, emb), loaded.predict_proba(texts, emb)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_allclose(p2.sum(axis=1), 1.0, atol=1e-9)
    assert loaded.predict(texts[:3], emb[:3]) == ["a", "b", "c"]
    raw = json.loads((out / MANIFEST).read_text())
    assert raw["format_version"] == 1
    assert raw["embedder"] == {"name": "test/dummy", "dim": DIM, "validated_backend": "torch"}
    assert loaded.manifest is not None and loaded.manifest.validated_backend == "torch"
    assert len(raw["fingerprint"]) == 64 and raw["metrics"]["accuracy"] == 1.0


def copy_artifact(src, dst):
    dst.mkdir()
    for f in (MANIFEST, MODEL_FILE, VOCAB_FILE):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nope")


@pytest.mark.parametrize("name", [MANIFEST, MODEL_FILE, VOCAB_FILE])
def test_missing_file(trained, tmp_path, name):
    d = copy_artifact(trained[1], tmp_path / "a")
    (d / name).unlink()
    with pytest.raises(ArtifactError, match=f"missing.*{name}"):
        load_artifact(d)


def test_bad_json(trained, tmp_path):
    d = copy_artifact(trained[1], tmp_path / "a")
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest.json"):
        load_artifact(d)


def test_corrupt_model(trained, tmp_path):
    d = copy_artifact(trained[1], tmp_path / "a")
    (d / MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="corrupt model file"):
        load_artifact(d)


def test_wrong_format_version(trained, tmp_path):
    d = copy_artifact(trained[1], tmp_path / "a")
    raw = json.loads((d / MANIFEST).read_text())
    raw["format_version"] = 99
    (d / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="unknown format_version 99"):
        load_artifact(d)


def test_dimension_mismatch(trained):
    with pytest.raises(ArtifactError, match="dimension mismatch.*dim 8.*dim 384"):
        load_artifact(trained[1], expected_dim=384)


def test_manifest_lacking_fields(trained, tmp_path):
    d = copy_artifact(trained[1], tmp_path / "a")
    raw = json.loads((d / MANIFEST).read_text())
    del raw["categories"]
    (d / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="categories"):
        load_artifact(d)


def test_tfidf_only_and_embedding_only(tmp_path):
    labels = ["x", "y"] * 30
    texts = [f"word{y} common{i % 5}" for i, y in enumerate(labels)]
    emb = np.eye(2, dtype=np.float32)[[0 if y == "x" else 1 for y in labels]]
    for kind in ("tfidf", "embedding"):
        clf = fit_classifier(texts, labels, embedder=None, embeddings=emb, kind=kind)
        m = new_manifest(
            categories=clf.categories, embedder_name="d", embedder_dim=2, texts=texts, labels=labels
        )
        clf.save(tmp_path / kind, m)
        loaded = load_artifact(tmp_path / kind, expected_dim=2)
        assert loaded.kind == kind
        assert loaded.predict(texts[:2], emb[:2]) == ["x", "y"]
    assert not (tmp_path / "embedding" / VOCAB_FILE).exists()


def test_artifact_threshold_is_the_default_of_a_request_without_one(trained, tmp_path):
    """manifest `routing.threshold` round-trips and is what the category policy falls back at when
    neither the request nor the settings set a threshold (RoutingOptions(threshold=None))."""
    from router.core import Router
    from router.defaults import DEFAULT_THRESHOLD
    from router.types import ExpertInfo, RegistrySnapshot, RoutingOptions

    clf, out, texts, emb = trained
    assert load_artifact(out).manifest.threshold is None  # an artifact that records none
    raw = json.loads((out / MANIFEST).read_text())
    raw["routing"] = {"threshold": 0.9, "chosen_by": "test"}
    dst = copy_artifact(out, tmp_path / "with-threshold")
    (dst / MANIFEST).write_text(json.dumps(raw))
    loaded = load_artifact(dst)
    assert loaded.manifest.threshold == 0.9 and loaded.manifest.routing["chosen_by"] == "test"
    router = Router(loaded, embedder=None if not loaded.needs_embeddings else _FixedEmbedder(emb[0]))
    assert router.threshold == 0.9
    snapshot = RegistrySnapshot(
        revision=1,
        experts={
            n: ExpertInfo(name=n, base_url="http://x/v1", model=n, tags=t)
            for n, t in (("ax", ()), ("gen", ("generalist",)))
        },
        category_experts={"a": ("ax",)},
    )
    row = np.array([0.8, 0.1, 0.1])  # confident in "a", yet below the artifact's 0.9
    assert router.decide(row, snapshot, {}, RoutingOptions(threshold=None)).fallback
    assert not router.decide(row, snapshot, {}, RoutingOptions(threshold=0.5)).fallback  # request wins
    assert RoutingOptions().threshold is None  # a bare RoutingOptions defers to the artifact
    assert RoutingOptions(threshold=None).fallback_threshold == DEFAULT_THRESHOLD
    plain = Router(load_artifact(out), embedder=router.embedder)  # records no threshold: the default
    assert not plain.decide(row, snapshot, {}, RoutingOptions(threshold=None)).fallback
    raw["routing"] = {"threshold": 1.5}
    (dst / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="routing.threshold"):
        load_artifact(dst)


class _FixedEmbedder:
    name, dim = "test/dummy", DIM

    def __init__(self, row):
        self.row = row

    def embed(self, texts):
        return np.tile(self.row, (len(texts), 1))
