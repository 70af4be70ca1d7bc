"""End-to-end `coe eval routing` on a small RouterBench slice (--json, --report), and the report's images."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from eval.commands.cli import build_eval_app
from eval.outcomes import load_outcomes
from eval.routing.replay import build_snapshot, skill_profiles
from tests.eval._routing_shared import ROUTERBENCH, needs_shared

pytestmark = [pytest.mark.shared_data, needs_shared]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(build_eval_app(), name="eval")
    return app


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("routing")
    res = CliRunner().invoke(
        _app(),
        [
            "eval",
            "routing",
            "--data",
            str(ROUTERBENCH / "mbpp_train.csv"),
            "--data",
            str(ROUTERBENCH / "winograde_train.csv"),
            "--format",
            "routerbench",
            "--classifier",
            "tfidf",
            "--policies",
            "category,top_k,top_p,cost_aware,quality",
            "--heads",
            "knn,logreg",
            "--limit",
            "400",
            "--seed",
            "3",
            "--json",
            str(out / "r.json"),
            "--report",
            str(out / "rep"),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    return out, res, json.loads((out / "r.json").read_text())


def test_json_has_policies_baselines_and_tables(run):
    _, res, r = run
    assert set(r["policies"]) == {
        "category",
        "top_k",
        "top_p",
        "cost_aware",
        "quality",
        "cost_aware@knn",
        "cost_aware@logreg",
        "quality@knn",
        "quality@logreg",
    }
    for pol in r["policies"].values():
        assert 0 <= pol["apgr"] <= 1 and 0 <= pol["aiq"] <= 1
        assert len(pol["curve"]) >= 2 and all(len(p) == 2 and p[0] > 0 for p in pol["curve"])
        for key in ("cpt50", "cpt80"):
            assert pol[key] is None or 0 <= pol[key] <= 1
        assert 0 <= pol["quality_at_20pct_strong_cost"] <= 1
    # `quality` is the service policy with the head chosen on the training part
    chosen = r["quality_head"]["chosen"]
    assert chosen in ("knn", "logreg") and r["policies"]["quality"]["quality_head"] == chosen
    assert r["policies"]["quality"]["curve"] == r["policies"][f"quality@{chosen}"]["curve"]
    b = r["baselines"]
    assert {"oracle", "best_single", "random", "single"} <= set(b)
    assert b["random"]["apgr"] == pytest.approx(0.5)
    assert b["oracle"]["quality"] >= max(v["quality"] for v in b["single"].values())
    assert b["oracle"]["apgr"] > 0.9
    weak = r["reference"]["weak"]
    assert b["single"][weak]["apgr"] == pytest.approx(0.0)
    assert set(r["categories"]) == {"mbpp", "winogrande"}
    assert r["dataset"]["n_train"] + r["dataset"]["n_test"] == 400
    # the cost-aware sweep spans from cheap to strong: its curve is not a single point
    costs = [c for c, _ in r["policies"]["cost_aware"]["curve"]]
    assert max(costs) > 5 * min(costs)
    assert "APGR" in res.output and "cost_aware" in res.output and "CPT50" in res.output


def test_report_references_existing_pngs(run):
    out, _, _ = run
    html = (out / "rep" / "index.html").read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert len(images) == 3
    for name in images:
        data = (out / "rep" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    md = (out / "rep" / "report.md").read_text()
    assert all(f"]({name})" in md for name in images)
    assert "winogrande" in html and "cost_aware" in md


def test_unknown_policy_is_one_line_error():
    res = CliRunner().invoke(
        _app(),
        [
            "eval",
            "routing",
            "--data",
            str(ROUTERBENCH / "mbpp_train.csv"),
            "--format",
            "routerbench",
            "--policies",
            "category,nope",
        ],
    )
    assert res.exit_code != 0
    assert "nope" in str(res.exception)


def test_snapshot_with_fitted_token_prices():
    from eval.training.quality_train import fit_prices

    mat = load_outcomes([ROUTERBENCH / "mbpp_train.csv"], "routerbench", limit=120)
    skills, _ = skill_profiles(mat)
    prices = fit_prices(mat)
    snap, _ = build_snapshot(mat, skills, prices)
    e = snap.experts["gpt-4-1106-preview"]
    assert (e.cost_input_per_m, e.cost_output_per_m) == prices["gpt-4-1106-preview"]


def test_snapshot_uses_training_skills_and_prices():
    mat = load_outcomes([ROUTERBENCH / "mbpp_train.csv"], "routerbench", limit=120)
    skills, counts = skill_profiles(mat)
    snap, generalist = build_snapshot(mat, skills)
    j = mat.models.index(generalist)
    assert mat.quality[:, j].mean() == pytest.approx(mat.quality.mean(axis=0).max())
    assert counts == {"mbpp": 120}
    e = snap.experts["gpt-4-1106-preview"]
    assert e.cost_usd(500, 500) == pytest.approx(mat.cost[:, mat.models.index(e.name)].mean())
    ranked = snap.category_experts["mbpp"]
    assert [skills[m]["mbpp"] for m in ranked] == sorted((skills[m]["mbpp"] for m in ranked), reverse=True)
    j4 = mat.models.index("gpt-4-1106-preview")
    assert np.isclose(skills["gpt-4-1106-preview"]["mbpp"], mat.quality[:, j4].mean())
