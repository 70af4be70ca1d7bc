"""The quality head (router/quality.py) and the policies that use it, on hand-built heads and snapshots."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from router.core import Router, artifact_encoder
from router.errors import ArtifactError, RoutingError
from router.policies import get_policy
from router.quality import (
    KnnScorer,
    LogRegScorer,
    QualityHead,
    has_quality_head,
    load_quality_head,
    prompt_tokens,
    update_defaults,
)
from router.types import ExpertInfo, QualityEstimate, RegistrySnapshot, RoutingOptions

BUNDLED = Path(__file__).resolve().parents[2] / "router" / "artifacts" / "default"
DIM = 384


_TUNED = artifact_encoder(BUNDLED)
BUNDLED_EMBEDDER = _TUNED.name if _TUNED is not None else "sentence-transformers/all-MiniLM-L6-v2"


class HashEmbedder:
    """A deterministic stand-in for MiniLM: unit vectors from a hash of the text."""

    dim = DIM
    # it stands in for the bundled artifact's embedder (its tuned encoder), whose name Router.load checks
    name = BUNDLED_EMBEDDER

    def embed(self, texts):
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(DIM)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)


def expert(name, cost_in=0.0, cost_out=0.0, tags=()):
    return ExpertInfo(
        name=name,
        base_url="http://x/v1",
        model=name,
        cost_input_per_m=cost_in,
        cost_output_per_m=cost_out,
        tags=tags,
    )


def snapshot():
    experts = [
        expert("cheap", 0.1, 0.1),
        expert("strong", 10.0, 30.0),
        expert("gen", 1.0, 1.0, ("generalist",)),
    ]
    return RegistrySnapshot(
        revision=1,
        experts={e.name: e for e in experts},
        category_experts={"math": ("strong", "cheap")},
        skills={"strong": {"math": 0.9}, "cheap": {"math": 0.6}},
    )


def estimate(cheap, strong, **kw):
    return QualityEstimate(
        quality={"cheap": cheap, "strong": strong},
        prompt_tokens=100,
        completion_tokens={"cheap": 200, "strong": 200},
        **kw,
    )


def decide(policy, est, **opts):
    return get_policy(policy).decide(
        [("math", 1.0)], snapshot(), {}, RoutingOptions(policy=policy, **opts), est
    )


def small_head(models=("cheap", "strong")):
    rng = np.random.default_rng(0)
    emb = HashEmbedder().embed([f"q{i}" for i in range(40)])
    quality = (rng.random((40, len(models))) < np.linspace(0.3, 0.9, len(models))).astype(float)
    return QualityHead(
        models=tuple(models),
        method="knn",
        scorer=KnnScorer(emb, quality, k=5),
        calibration=np.tile([1.0, 0.0], (len(models), 1)),
        embedder_name="hash-test",
        embedder_dim=DIM,
        tokens=np.vstack([np.zeros((DIM, len(models))), np.full((1, len(models)), np.log1p(150.0))]),
        prices={m: (1.0, 2.0) for m in models},
        strong_model=models[-1],
    )


# --- policies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["cost_aware", "quality"])
def test_tie_in_predicted_quality_goes_to_the_cheaper_expert(policy):
    d = decide(policy, estimate(0.8, 0.8))
    assert d.expert_names == ("cheap",)
    assert "predicted quality" in d.experts[0].reason


def test_cost_aware_takes_the_stronger_when_the_gap_exceeds_tolerance():
    assert decide("cost_aware", estimate(0.70, 0.80), tolerance=0.05).expert_names == ("strong",)
    assert decide("cost_aware", estimate(0.78, 0.80), tolerance=0.05).expert_names == ("cheap",)


def test_quality_policy_trades_quality_against_cost_with_lambda():
    est = estimate(0.70, 0.80)
    assert decide("quality", est, lambda_=0.0).expert_names == ("strong",)
    # strong costs (100·10 + 200·30)/1e6 = $0.007, cheap $0.00003: λ = 100 prices the gap at $0.001
    assert decide("quality", est, lambda_=100.0).expert_names == ("cheap",)
    assert decide("quality", est, wtp_usd=1 / 100.0).expert_names == ("cheap",)
    # the head's calibrated default applies when the request sets no λ
    assert decide("quality", estimate(0.70, 0.80, default_lambda=100.0)).expert_names == ("cheap",)


def test_budget_is_checked_against_the_per_query_cost():
    est = estimate(0.5, 0.9)
    assert decide("quality", est, budget_usd=0.01).expert_names == ("strong",)
    assert decide("quality", est, budget_usd=0.001).expert_names == ("cheap",)
    assert decide("cost_aware", est, budget_usd=0.001).expert_names == ("cheap",)
    # max_tokens caps the expected completion: strong then costs (100·10 + 10·30)/1e6 = $0.0013
    assert decide("quality", est, budget_usd=0.0015, max_tokens=10).expert_names == ("strong",)
    with pytest.raises(RoutingError, match="budget"):
        decide("quality", est, budget_usd=1e-9)


def test_without_an_estimate_the_policies_fall_back_to_skill_scores():
    d = decide("cost_aware", None, tolerance=0.05)
    assert d.expert_names == ("strong",) and "skill" in d.experts[0].reason
    assert decide("quality", None, lambda_=0.0).expert_names == ("strong",)
    # an estimate that covers no registered expert is the same as none
    other = QualityEstimate(quality={"unknown-model": 1.0})
    assert decide("cost_aware", other).expert_names == ("strong",)


def test_other_policies_ignore_the_estimate():
    a = get_policy("top_k").decide([("math", 1.0)], snapshot(), {}, RoutingOptions(policy="top_k", k=1))
    b = get_policy("top_k").decide(
        [("math", 1.0)], snapshot(), {}, RoutingOptions(policy="top_k", k=1), estimate(1.0, 0.0)
    )
    assert a.expert_names == b.expert_names == ("strong",)


def test_bad_knobs_are_routing_errors():
    for opts in ({"lambda_": -1.0}, {"wtp_usd": 0.0}, {"lambda_": 1.0, "wtp_usd": 1.0}, {"max_tokens": 0}):
        with pytest.raises(RoutingError):
            decide("quality", estimate(0.5, 0.5), **opts)


# --- the head and the artifact ----------------------------------------------------------------------


def test_head_predicts_probabilities_and_tokens():
    head = small_head()
    emb = HashEmbedder().embed(["a", "b", "c"])
    q = head.predict(emb)
    assert q.shape == (3, 2) and ((q >= 0) & (q <= 1)).all()
    assert np.allclose(head.completion_tokens(emb), 150.0)
    est = head.estimates(["abcdefgh", "b", "c"], emb)
    assert est[0].prompt_tokens == prompt_tokens("abcdefgh") == 2
    assert set(est[0].quality) == {"cheap", "strong"}


def test_logreg_scorer_and_calibration_shape():
    coef = np.zeros((2, DIM))
    head = QualityHead(
        ("a", "b"),
        "logreg",
        LogRegScorer(coef, np.array([0.0, 2.0])),
        np.array([[1.0, 0.0], [2.0, -1.0]]),
        "hash-test",
        DIM,
    )
    q = head.predict(HashEmbedder().embed(["x"]))[0]
    assert q[0] == pytest.approx(0.5)
    assert q[1] == pytest.approx(1 / (1 + np.exp(-(2 * 2.0 - 1))))
    with pytest.raises(ArtifactError):
        QualityHead(("a", "b"), "logreg", LogRegScorer(coef, np.zeros(2)), np.ones((3, 2)), "x", DIM)


def test_save_load_and_router_load(tmp_path):
    art = tmp_path / "art"
    shutil.copytree(BUNDLED, art)
    assert not has_quality_head(art)
    assert Router.load(art, embedder=HashEmbedder()).quality is None
    head = small_head()
    head.save(art)
    loaded = load_quality_head(art)
    emb = HashEmbedder().embed(["x", "y"])
    assert np.allclose(loaded.predict(emb), head.predict(emb))
    assert loaded.models == head.models and loaded.prices == head.prices
    update_defaults(art, {"lambda": 12.5})
    router = Router.load(art, embedder=HashEmbedder())
    assert router.quality is not None and router.quality.default_lambda == 12.5
    # the service path: route() embeds once and hands each query's estimate to the policy
    decisions = router.route(["Is 91 prime?"], snapshot(), {}, RoutingOptions(policy="quality", lambda_=0.0))
    assert "predicted quality (knn)" in decisions[0].experts[0].reason
    est = router.estimates(["Is 91 prime?"])
    assert est is not None and est[0].default_lambda == 12.5


def test_broken_head_is_an_artifact_error(tmp_path):
    art = tmp_path / "art"
    shutil.copytree(BUNDLED, art)
    small_head().save(art)
    (art / "quality" / "manifest.json").write_text('{"format_version": 1, "method": "knn"}')
    with pytest.raises(ArtifactError, match="quality head"):
        Router.load(art, embedder=HashEmbedder())
