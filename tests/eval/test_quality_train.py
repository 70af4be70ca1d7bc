"""Training, choosing and calibrating the quality head on a small RouterBench slice, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from eval.outcomes import load_outcomes
from eval.training.quality_train import calibrate_lambda, fit_prices, token_counts, train_quality_head
from router.quality import load_quality_head, prompt_tokens
from tests.eval._routing_shared import ROUTERBENCH, needs_shared

pytestmark = [pytest.mark.shared_data, needs_shared]


def lsa(texts, dim=48):
    """Cheap stand-in embeddings: TF-IDF → SVD, L2-normalised (no torch in these tests)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    x = TfidfVectorizer(min_df=2).fit_transform(texts)
    return normalize(TruncatedSVD(dim, random_state=0).fit_transform(x)).astype(np.float32)


@pytest.fixture(scope="module")
def slice_():
    mat = load_outcomes([ROUTERBENCH / "mbpp_train.csv", ROUTERBENCH / "winograde_train.csv"], "routerbench")
    rng = np.random.default_rng(0)
    mat = mat.take(np.sort(rng.choice(mat.n, 360, replace=False)))
    return mat, lsa(list(mat.texts))


@pytest.fixture(scope="module")
def trained(slice_):
    mat, emb = slice_
    return train_quality_head(mat, emb, embedder_name="lsa", methods=("knn", "logreg"), n_folds=3, k=10)


def test_head_is_chosen_by_out_of_fold_apgr_and_predicts_probabilities(trained, slice_, tmp_path):
    mat, emb = slice_
    res = trained
    assert set(res.validation) == {"knn", "logreg"}
    best = max(res.validation.values(), key=lambda v: v["apgr"])
    assert res.validation[res.chosen]["apgr"] == best["apgr"]
    for v in res.validation.values():
        assert 0 <= v["apgr"] <= 1 and 0 <= v["brier"] <= 1 and 0 <= v["ece"] <= 1
    head = res.head
    head.save(tmp_path)
    loaded = load_quality_head(tmp_path)
    q = loaded.predict(emb[:50])
    assert q.shape == (50, mat.m) and ((q >= 0) & (q <= 1)).all()
    assert np.allclose(q, head.predict(emb[:50]))
    toks = loaded.completion_tokens(emb[:50])
    assert toks is not None and (toks >= 1).all()
    assert loaded.strong_model == "gpt-4-1106-preview"
    manifest = json.loads((tmp_path / "quality" / "manifest.json").read_text())
    assert manifest["method"] == res.chosen and manifest["models"] == list(mat.models)
    assert manifest["metrics"]["validation"][res.chosen]["apgr"] == res.validation[res.chosen]["apgr"]


def test_calibration_hits_the_strong_share(trained, slice_):
    mat, emb = slice_
    pt = np.array([prompt_tokens(t) for t in mat.texts])
    for target in (0.1, 0.3, 0.5):
        res = calibrate_lambda(trained.head, emb, pt, strong_share=target)
        assert abs(res["strong_share"] - target) <= 0.02, res
    budget = calibrate_lambda(trained.head, emb, pt, budget_usd=0.001)
    assert budget["mean_cost_usd"] <= 0.001


def test_fitted_prices_reproduce_routerbench_costs(slice_):
    mat, _ = slice_
    prices = fit_prices(mat)
    pt, ct = token_counts(mat)
    j = mat.models.index("gpt-4-1106-preview")
    pred = (pt * prices["gpt-4-1106-preview"][0] + ct[:, j] * prices["gpt-4-1106-preview"][1]) / 1e6
    # RouterBench's cost is list price × real tokens; chars / 4 is an estimate of those tokens
    assert abs(pred.mean() / mat.cost[:, j].mean() - 1) < 0.15


def _app() -> typer.Typer:
    from eval.commands.cli import build_router_app

    app = typer.Typer()
    app.add_typer(build_router_app(), name="router")
    return app


@pytest.mark.slow
def test_cli_train_and_calibrate(tmp_path, slice_):
    from eval.outcomes.generic import write_jsonl

    mat, _ = slice_
    data = write_jsonl(mat.take(np.arange(120)), tmp_path / "o.jsonl")
    art = tmp_path / "art"
    res = CliRunner().invoke(
        _app(),
        [
            "router",
            "train",
            "--outcomes",
            str(data),
            "--format",
            "jsonl",
            "--out",
            str(art),
            "--heads",
            "knn,logreg",
            "--map",
            "gpt-4-1106-preview=gpt4",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "quality head" in res.output
    head = load_quality_head(art)
    assert head.expert("gpt-4-1106-preview") == "gpt4" and head.expert("claude-v2") == "claude-v2"
    assert (art / "manifest.json").is_file()  # the category artifact it was added to
    res = CliRunner().invoke(
        _app(),
        [
            "router",
            "calibrate",
            str(art),
            "--data",
            str(data),
            "--format",
            "jsonl",
            "--strong-share",
            "0.3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert abs(out["strong_share"] - 0.3) <= 0.02
    assert load_quality_head(art).default_lambda == pytest.approx(out["lambda"])
