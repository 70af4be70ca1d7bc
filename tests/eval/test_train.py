"""A small real training run on MMLU-Pro, and the CLI: `coe router train` + `coe eval router --json`."""

import json
from collections import Counter

import pytest

from eval.training.train import split, train_router
from router.classifier import load_artifact
from router.core import Router
from router.types import ExpertInfo, RegistrySnapshot, RoutingOptions
from tests.router._shared import MMLU_ZIP, embedder, mmlu_examples, needs_mmlu

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, needs_mmlu]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from eval.data.datasets import sample

    exs = sample(mmlu_examples(), 1200, seed=3)
    out = tmp_path_factory.mktemp("router")
    result = train_router(
        exs, out=out, embedder=embedder(), val_fraction=0.2, with_options=False, show_progress=False
    )
    return exs, out, result


def test_beats_majority_on_held_out(trained):
    exs, out, result = trained
    m = result.metrics
    assert m["n"] == 240 and m["split"] == "validation"
    assert m["accuracy"] > m["majority_accuracy"] + 0.3
    assert 0 <= m["ece"] < 0.2
    _, val = split(exs, 0.2)
    majority = Counter(e.label for e in exs).most_common(1)[0][0]
    assert m["majority_accuracy"] == pytest.approx(sum(e.label == majority for e in val) / len(val), abs=0.02)


def test_router_loads_and_routes(trained):
    _, out, result = trained
    router = Router(load_artifact(out, expected_dim=embedder().dim), embedder())
    assert len(router.categories) == 14 and router.version == result.version
    texts = [
        "Find all roots of the polynomial x^3 - 2x + 1 over the reals.",
        "Under the Fourth Amendment, may the police search a car without a warrant?",
    ]
    probs = router.probabilities(texts)
    assert probs.shape == (2, 14)
    cats = router.categories
    assert cats[probs[0].argmax()] == "math" and cats[probs[1].argmax()] == "law"
    snapshot = RegistrySnapshot(
        revision=1,
        experts={
            n: ExpertInfo(name=n, base_url="http://x/v1", model=n, tags=t)
            for n, t in (("mathx", ()), ("lawx", ()), ("gen", ("generalist",)))
        },
        category_experts={"math": ("mathx",), "law": ("lawx",)},
    )
    decisions = router.route(texts, snapshot, {}, RoutingOptions(threshold=0.2))
    assert [d.expert_names for d in decisions] == [("mathx",), ("lawx",)]
    assert decisions[0].router_version == result.version
    assert {"embed", "classify", "policy"} <= set(decisions[0].timings_ms)


def cli_app():
    """The `coe router` / `coe eval` commands exactly as eval/commands/cli.py builds them."""
    import typer

    from eval.commands.cli import build_eval_app, build_router_app

    app = typer.Typer()
    app.add_typer(build_router_app(), name="router")
    app.add_typer(build_eval_app(), name="eval")
    return app


def test_cli_train_and_eval(tmp_path):
    from typer.testing import CliRunner

    app = cli_app()
    runner = CliRunner()
    out = tmp_path / "art"
    res = runner.invoke(
        app,
        [
            "router",
            "train",
            "--format",
            "mmlu-pro",
            "--data",
            str(MMLU_ZIP),
            "--out",
            str(out),
            "--limit",
            "200",
            "--val-fraction",
            "0.2",
            "--json",
            "--threads",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout.strip().splitlines()[-1])
    assert trained["n_val"] == 40 and (out / "manifest.json").is_file()

    res = runner.invoke(app, ["router", "info", str(out)])
    assert res.exit_code == 0 and trained["version"] in res.stdout

    report = tmp_path / "report"
    json_path = tmp_path / "m.json"
    res = runner.invoke(
        app,
        [
            "eval",
            "router",
            "--router",
            str(out),
            "--data",
            str(MMLU_ZIP),
            "--format",
            "mmlu-pro",
            "--limit",
            "80",
            "--latency-samples",
            "10",
            "--seed",
            "7",
            "--json",
            str(json_path),
            "--report",
            str(report),
            "--threads",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads(json_path.read_text())
    assert m["n"] == 80 and 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and "ece" in m
    assert {"majority", "tfidf_lr", "knn"} <= set(m["baselines"])
    assert m["accuracy"] > m["baselines"]["majority"]["accuracy"]
    assert (report / "confusion.png").stat().st_size > 1000 and (report / "reliability.png").is_file()


def test_cli_errors_are_one_line(tmp_path):
    from tests.eval._cli import coe

    pytest.importorskip("registry.cli")  # the `coe` root registers every sub-app

    args = ["--router", str(tmp_path / "missing"), "--data", str(MMLU_ZIP), "--format", "mmlu-pro"]
    proc = coe("eval", "router", *args, "--limit", "10")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: router artifact not found"), proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    proc = coe("router", "train", "--format", "jsonl", "--data", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {bad}:1: missing field 'label'"


def test_add_category_and_examples_errors_are_one_line(tmp_path):
    """Bad example files and names: one stderr line, exit 2, before any model is loaded."""
    from tests.eval._cli import coe as run

    pytest.importorskip("registry.cli")
    few = tmp_path / "few.txt"
    few.write_text("only one prompt\n\n")

    def coe(*args):
        proc = run(*args)
        return proc.returncode, proc.stderr.strip()

    assert coe("router", "add-category", "sql", "--examples", str(few), "--out", str(tmp_path / "o")) == (
        2,
        f"error: {few}: 1 example prompts for 'sql'; give at least 3, one per line",
    )
    code, err = coe("router", "add-category", "sql", "--examples", str(tmp_path / "nope.txt"), "--out", "x")
    assert code == 2 and err.startswith("error: ") and "cannot read" in err and "\n" not in err
    code, err = coe(
        "router", "train", "--format", "mix", "--data", str(tmp_path), "--out", "x", "--examples", "sql"
    )
    assert (code, err) == (2, "error: --examples 'sql': expected NAME=FILE")


def test_source_weights_even_out_the_sources_of_a_category():
    """--source-balance: within a category, a source of 1 row weighs more than one of 9 rows (all of it at
    power 1, part of it at 0.5), and every category keeps its total weight (class balancing is separate)."""
    import numpy as np

    from eval.training.balance import source_weights

    labels = ["math"] * 10 + ["chat"] * 4
    sources = ["gsm8k"] * 9 + ["arena"] + ["oasst"] * 4
    assert (source_weights(labels, sources, 0.0) == 1.0).all()
    for power in (0.5, 1.0):
        w = source_weights(labels, sources, power)
        assert w[:10].sum() == pytest.approx(10.0) and w[10:] == pytest.approx(1.0)
        assert w[9] > w[0]
    full, half = source_weights(labels, sources, 1.0), source_weights(labels, sources, 0.5)
    assert full[:9].sum() == pytest.approx(full[9])  # power 1: the one arena row weighs all of gsm8k
    assert 1.0 < half[9] < full[9]
    assert np.isclose(half[:9], half[0]).all()
    # --balance-by real: the groups weigh evenly, the sources inside one group as they come
    two = ["gsm8k"] * 6 + ["math500"] * 3 + ["arena"] + ["oasst"] * 4
    grouped = source_weights(labels, two, 1.0, {"gsm8k": "written", "math500": "written"})
    assert grouped == pytest.approx(full)  # as if gsm8k and math500 were one source
    assert source_weights(labels, two, 1.0)[6] != pytest.approx(full[6])  # ungrouped: math500 its own


def test_fit_classifier_takes_one_sample_weight_per_text():
    from eval.training.train import fit_classifier
    from router.errors import BadRequest

    texts, labels = ["add two numbers", "write a poem", "sum the list", "a song"], ["m", "w", "m", "w"]
    with pytest.raises(BadRequest, match="one sample weight per text"):
        fit_classifier(texts, labels, embedder=None, kind="tfidf", sample_weight=[1.0])
    clf = fit_classifier(texts, labels, embedder=None, kind="tfidf", sample_weight=[1.0, 1.0, 2.0, 2.0])
    assert clf.categories == ("m", "w")


def test_cli_source_balance_out_of_range_is_one_line(tmp_path):
    from tests.eval._cli import coe

    pytest.importorskip("registry.cli")
    for cmd in (
        ["router", "train", "--format", "mix", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        ["eval", "sources", "--data", str(tmp_path)],
    ):
        proc = coe(*cmd, "--source-balance", "2")
        assert proc.returncode == 2
        assert proc.stderr.strip() == "error: --source-balance must be between 0 and 1, got 2.0"
    proc = coe("eval", "sources", "--data", str(tmp_path), "--balance-by", "x")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "error: --balance-by must be 'source' or, with --format mix, 'real'; got 'x'"
    )
