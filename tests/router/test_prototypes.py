"""router/prototypes.py: a category added from examples, beside a trained classifier (synthetic vectors)."""

from __future__ import annotations

import numpy as np

from router.classifier import LinearHead, SkillClassifier, load_artifact, new_manifest
from router.embedder import l2_normalise
from router.prototypes import apply_heads, fit_prototype_head, reference_sample


def _clf(d: int = 16, seed: int = 0) -> tuple[SkillClassifier, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(3, d)).astype(np.float32)
    clf = SkillClassifier(("a", "b", "c"), embedding_head=LinearHead(coef, np.zeros(3)))
    ref = l2_normalise(rng.normal(size=(90, d)))
    return clf, ref, rng.normal(size=d)


def test_gate_claims_paraphrases_and_leaves_unlike_prompts_alone() -> None:
    clf, ref, direction = _clf()
    rng = np.random.default_rng(1)
    near = l2_normalise(direction + 0.25 * rng.normal(size=(30, 16)))
    head = fit_prototype_head("new", near[:12], ref)
    paraphrases, unlike = near[12:], l2_normalise(rng.normal(size=(200, 16)))
    assert (head.gate(paraphrases) > 0.5).all()
    assert (head.gate(unlike) < 0.5).mean() > 0.95

    base = clf.predict_proba(None, unlike)  # type: ignore[arg-type]
    extended = apply_heads(base, unlike, [head])
    assert extended.shape == (200, 4) and np.allclose(extended.sum(axis=1), 1.0)
    kept = extended.argmax(axis=1) != 3
    # where the new category does not win, the other categories keep their order exactly
    assert (extended[kept, :3].argmax(axis=1) == base[kept].argmax(axis=1)).all()
    assert (apply_heads(clf.predict_proba(None, paraphrases), paraphrases, [head]).argmax(axis=1) == 3).all()  # type: ignore[arg-type]


def test_artifact_round_trip_with_reference_and_prototypes(tmp_path) -> None:
    clf, ref, direction = _clf()
    ref16, labels = reference_sample(ref, [i % 3 for i in range(90)], per_category=5)
    assert ref16.dtype == np.float16 and len(labels) == 15
    head = fit_prototype_head("new", l2_normalise(direction + 0.2 * np.ones((5, 16))), ref)
    ext = SkillClassifier(
        clf.base_categories, embedding_head=clf.embedding_head, prototypes=(head,), reference=(ref16, labels)
    )
    assert ext.categories == ("a", "b", "c", "new")
    m = new_manifest(categories=ext.categories, embedder_name="t", embedder_dim=16, texts=["x"], labels=["a"])
    ext.save(tmp_path / "art", m)
    back = load_artifact(tmp_path / "art", expected_dim=16)
    assert back.categories == ext.categories and back.base_categories == ("a", "b", "c")
    assert back.reference is not None and back.reference[0].shape == (15, 16)
    x = l2_normalise(np.random.default_rng(3).normal(size=(20, 16)))
    assert np.allclose(back.predict_proba(None, x), ext.predict_proba(None, x))  # type: ignore[arg-type]
