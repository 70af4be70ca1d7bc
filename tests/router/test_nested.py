"""Nested subjects (router/classifier.py `Nested`) and the code-aware reading of vague prompts
(router/core.py `Router._read_code`), on synthetic vectors: no embedder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.training.train import fit_classifier, inner_categories
from router.classifier import MANIFEST, MODEL_FILE, VOCAB_FILE, load_artifact, nest, new_manifest
from router.errors import ArtifactError
from router.text import code_text

DIM = 8
CATS = "abcde"


def test_nest_keeps_outer_columns_and_shares_the_group_mass_by_the_inner_mixture() -> None:
    p_out = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    p_in = np.array([[0.05, 0.5, 0.25, 0.2], [0.25, 0.25, 0.25, 0.25]])
    inner = np.array([1, 2])
    out = nest(p_out, p_in, inner)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[:, [0, 3]], p_out[:, [0, 3]])  # outer categories: P_out as is
    np.testing.assert_allclose(out[:, 1] + out[:, 2], p_out[:, 1] + p_out[:, 2])  # the group's mass
    np.testing.assert_allclose(out[0, 1] / out[0, 2], 2.0)  # shared in P_in's ratio (0.5 : 0.25)


def test_inner_categories_are_those_the_nested_sources_label_most() -> None:
    labels = ["law", "law", "history", "math", "math", "coding"]
    sources = ["mmlu_pro", "mmlu_pro", "mmlu_pro", "mmlu_pro", "gsm8k", "humaneval"]
    assert inner_categories(labels, sources, frozenset({"mmlu_pro"})) == ("history", "law")
    assert inner_categories(labels, sources, frozenset()) == ()
    # a subject a few real prompts also ask about stays nested; one labelled mostly elsewhere does not
    more = (labels + ["law", "math", "math"], sources + ["arena_hard", "math500", "math500"])
    assert inner_categories(*more, frozenset({"mmlu_pro"})) == ("history", "law")
    # one subject only, or every category nested: nothing to nest
    assert inner_categories(["law", "coding"], ["mmlu_pro", "humaneval"], frozenset({"mmlu_pro"})) == ()
    assert inner_categories(["law", "history"], ["mmlu_pro"] * 2, frozenset({"mmlu_pro"})) == ()


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    rng = np.random.default_rng(1)
    labels = [c for c in CATS] * 30
    centers = {c: rng.normal(size=DIM) for c in CATS}
    emb = np.array([centers[y] + 0.4 * rng.normal(size=DIM) for y in labels], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = [f"token{y} filler{i % 7}" for i, y in enumerate(labels)]
    clf = fit_classifier(
        texts, labels, embedder=None, embeddings=emb, kind="hybrid", inner=("c", "d", "e"), nested_weight=0.9
    )
    manifest = new_manifest(
        categories=clf.categories, embedder_name="test/dummy", embedder_dim=DIM, texts=texts, labels=labels
    )
    out = tmp_path_factory.mktemp("nested")
    clf.save(out, manifest)
    return clf, out, texts, emb


def test_a_nested_classifier_round_trips_and_its_probabilities_are_nested(nested) -> None:
    clf, out, texts, emb = nested
    assert clf.nested is not None and clf.nested.inner == ("c", "d", "e")
    assert clf.nested.weights == pytest.approx((0.9, 0.1))
    loaded = load_artifact(out, expected_dim=DIM)
    assert loaded.nested == clf.nested
    p, q = clf.predict_proba(texts, emb), loaded.predict_proba(texts, emb)
    np.testing.assert_allclose(p, q, atol=1e-6)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-9)
    # by hand: the outer mixture for a and b and the group, the inner one within the group
    logps = loaded.head_log_probas(texts, emb)
    inner = loaded.combine_inner(logps)
    a, b = loaded.nested.weights
    z = (a * logps[0] + b * logps[1]) / loaded.temperature
    outer = np.exp(z - z.max(axis=1, keepdims=True))
    outer /= outer.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q[:, :2], outer[:, :2], atol=1e-9)
    group = inner[:, 2:] / inner[:, 2:].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q[:, 2:], outer[:, 2:].sum(axis=1, keepdims=True) * group, atol=1e-9)
    assert (q.argmax(axis=1) == np.array([CATS.index(y) for y in CATS * 30])).mean() > 0.9
    assert json.loads((out / MANIFEST).read_text())["model"]["nested"]["inner"] == ["c", "d", "e"]


def _copy(src, dst):
    dst.mkdir()
    for f in (MANIFEST, MODEL_FILE, VOCAB_FILE):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


@pytest.mark.parametrize(
    "bad",
    [
        {"weights": [0.9, 0.1], "inner": ["c"]},
        {"weights": [0.9, 0.1], "inner": ["c", "zz"]},
        {"weights": ["nan", 0.1], "inner": ["c", "d"]},
        {"weights": [0.9], "inner": ["c", "d"]},
    ],
)
def test_a_mangled_nested_field_is_an_artifact_error(nested, tmp_path, bad) -> None:
    d = _copy(nested[1], tmp_path / "a")
    raw = json.loads((d / MANIFEST).read_text())
    raw["model"]["nested"] = bad
    (d / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="nested"):
        load_artifact(d)


def test_nesting_needs_the_categories_in_the_data() -> None:
    from router.errors import BadRequest

    emb = np.eye(3, dtype=np.float32)[[0, 1, 2] * 10]
    with pytest.raises(BadRequest, match="nested"):
        fit_classifier(["x y"] * 30, list("abc") * 10, embedder=None, embeddings=emb, inner=("b", "q"))


# --- code-aware reading -------------------------------------------------------------------------


def test_code_text_is_the_blocks_of_a_prompt_with_prose() -> None:
    assert code_text("Can you speed it up?\n```python\nx = 1\n```") == "x = 1"
    assert code_text("```\nx = 1\n```") is None  # nothing but code: routing_text reads it already
    assert code_text("no code here") is None


@pytest.fixture(scope="module")
def lexical_router(tmp_path_factory):
    """A TF-IDF-only router over 4 categories whose vocabulary is `word<c>`, threshold 0.6."""
    from router.core import Router

    labels = list("wxyz") * 25
    texts = [f"word{y} word{y} common{i % 3}" for i, y in enumerate(labels)]
    clf = fit_classifier(texts, labels, embedder=None, embeddings=None, kind="tfidf")
    m = new_manifest(
        categories=clf.categories,
        embedder_name="d",
        embedder_dim=2,
        texts=texts,
        labels=labels,
        routing={"threshold": 0.6, "chosen_by": "test"},
    )
    out = tmp_path_factory.mktemp("lexical")
    clf.save(out, m)
    return Router(load_artifact(out), embedder=None)


def test_a_vague_instruction_reads_the_pasted_code_and_a_confident_one_does_not(lexical_router) -> None:
    router = lexical_router
    cats = router.categories
    vague, confident = "Can you make it faster?", "wordx wordx please"
    code = "```\nwordz wordz wordz\n```"
    p = router.probabilities([vague, f"{vague}\n{code}", confident, f"{confident}\n{code}"])
    assert p[0].max() < 0.6 <= p[2].max()  # the premise: one instruction too vague to route, one not
    assert cats[p[1].argmax()] == "z" and p[1][cats.index("z")] > p[0][cats.index("z")]
    np.testing.assert_allclose(p[3], p[2])  # a confident instruction keeps its category and its figures
    bare = router.probabilities([vague])[0]
    code_only = router.probabilities(["wordz wordz wordz"])[0]
    np.testing.assert_allclose(p[1], (bare + code_only) / 2, atol=1e-9)  # the mean of the two readings


def test_an_instruction_that_names_no_subject_reads_the_pasted_code(tmp_path) -> None:
    """ "My script crashes, how do I fix it?" is read as chat, confidently: with code pasted, the request is
    about the code, so a `chat` (TOPICLESS_CATEGORIES) instruction is read as its code, however confident."""
    from router.core import Router
    from router.defaults import TOPICLESS_CATEGORIES

    assert "chat" in TOPICLESS_CATEGORIES
    labels = ["chat", "x", "z"] * 30
    texts = [f"word{y} word{y} common{i % 3}" for i, y in enumerate(labels)]
    clf = fit_classifier(texts, labels, embedder=None, embeddings=None, kind="tfidf")
    m = new_manifest(
        categories=clf.categories, embedder_name="d", embedder_dim=2, texts=texts, labels=labels,
        routing={"threshold": 0.3, "chosen_by": "test"},
    )  # fmt: skip
    clf.save(tmp_path, m)
    router = Router(load_artifact(tmp_path), embedder=None)
    cats = router.categories
    chat, topical, code = "wordchat wordchat please", "wordx wordx please", "```\nwordz wordz wordz\n```"
    p = router.probabilities([chat, f"{chat}\n{code}", topical, f"{topical}\n{code}"])
    assert cats[p[0].argmax()] == "chat" and p[0].max() >= 0.3  # confident, yet names no subject
    code_only = router.probabilities(["wordz wordz wordz"])[0]
    np.testing.assert_allclose(p[1], code_only, atol=1e-9)  # the pasted code's reading
    assert cats[p[1].argmax()] == "z"
    np.testing.assert_allclose(p[3], p[2])  # a confident topical instruction keeps its reading
