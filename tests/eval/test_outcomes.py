"""Loaders on slices of the real files in ../shared/data, and malformed-row reporting."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from eval.outcomes import OutcomeMatrix, iter_json_array, load_outcomes
from router.errors import BadRequest
from tests.eval._routing_shared import ALPACA, MMLU, ROUTERBENCH, ROUTERDC, needs_shared

pytestmark = [pytest.mark.shared_data, needs_shared]


def _check(mat: OutcomeMatrix, *, costs: bool = True) -> None:
    assert mat.quality.shape == (mat.n, mat.m) == mat.cost.shape
    assert ((mat.quality >= 0) & (mat.quality <= 1)).all()
    assert len(set(mat.query_ids.tolist())) == mat.n
    assert all(t.strip() for t in mat.texts)
    if costs:
        assert (mat.cost > 0).all()
    assert mat.categories is not None and mat.categories.shape == (mat.n,)


def test_routerbench_slice():
    mat = load_outcomes([ROUTERBENCH / "mbpp_train.csv"], "routerbench")
    _check(mat)
    assert mat.m == 11 and "gpt-4-1106-preview" in mat.models
    assert mat.n + len(mat.issues) == 299  # every data row is either loaded or reported
    assert set(mat.categories.tolist()) == {"mbpp"}
    assert set(np.unique(mat.quality)) <= {0.0, 1.0}


def test_routerbench_reports_real_malformed_rows():
    mat = load_outcomes([ROUTERBENCH / "arc_challenge_train.csv"], "routerbench")
    assert mat.n + len(mat.issues) == 1039
    assert mat.issues and all(i.file.endswith("arc_challenge_train.csv") and i.line > 1 for i in mat.issues)
    with pytest.raises(BadRequest, match=r"arc_challenge_train\.csv:\d+"):
        load_outcomes([ROUTERBENCH / "arc_challenge_train.csv"], "routerbench", strict=True)


def test_malformed_row_reported_with_file_and_line(tmp_path):
    src = ROUTERBENCH / "winograde_train.csv"
    csv.field_size_limit(1 << 30)
    with src.open(newline="") as fh:
        rows = [r for _, r in zip(range(6), csv.reader(fh), strict=False)]
    header = rows[0]
    rows[3][header.index("gpt-4-1106-preview")] = "not-a-number"  # data row 3 → line 4
    rows[4][header.index("prompt")] = "['unterminated"  # data row 4 → line 5
    broken = tmp_path / "broken.csv"
    with broken.open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    mat = load_outcomes([broken], "routerbench")
    assert mat.n == 3
    assert [(i.file, i.line) for i in mat.issues] == [(str(broken), 4), (str(broken), 5)]
    assert "not-a-number" in mat.issues[0].message


def test_mmlu_pro_two_models_common_questions():
    models = ["Llama-2-7b-hf", "gemini-1.5-flash-002"]
    mat = load_outcomes([MMLU], "mmlu-pro", models=models)
    _check(mat)
    assert mat.models == tuple(models)
    assert 11_000 < mat.n <= 12_012  # the questions both answered
    assert len(mat.category_list()) == 14
    # gemini flash beats Llama-2-7B by a wide margin on MMLU-Pro
    assert mat.quality[:, 1].mean() > mat.quality[:, 0].mean() + 0.2
    assert mat.response_chars is not None and (mat.response_chars > 0).mean() > 0.9
    lim = load_outcomes([MMLU], "mmlu-pro", models=models, limit=50)
    assert lim.n == 50 and lim.query_ids.tolist() == mat.query_ids[:50].tolist()


def test_mmlu_pro_reports_non_object_records():
    mat = load_outcomes([MMLU / "model_outputs_DeepSeek-Coder-V2_5shots.zip"], "mmlu-pro")
    assert mat.issues and all("not an object" in i.message for i in mat.issues)
    assert all("DeepSeek-Coder-V2" in i.file for i in mat.issues)


def test_mmlu_pro_unknown_model_is_a_clear_error():
    with pytest.raises(BadRequest, match="unknown model.*known: "):
        load_outcomes([MMLU], "mmlu-pro", models=["no-such-model"])


def test_routerdc_slice():
    mat = load_outcomes([ROUTERDC / "humaneval_train.json"], "routerdc")
    _check(mat)
    assert (mat.n, mat.m) == (115, 7)
    assert set(mat.categories.tolist()) == {"humaneval"}
    # priced by size: the 8B models cost more than the 7B ones on the same query
    j8 = mat.models.index("meta-llama/Meta-Llama-3-8B")
    j7 = mat.models.index("mistralai/Mistral-7B-v0.1")
    assert (mat.cost[:, j8] > mat.cost[:, j7]).all()


def test_alpaca_eval_two_models():
    mat = load_outcomes([ALPACA / "gemma-2b-it", ALPACA / "gpt-3.5-turbo-1106"], "alpaca-eval")
    _check(mat)
    assert mat.models == ("gemma-2b-it", "gpt-3.5-turbo-1106") and mat.n == 365
    assert set(mat.categories.tolist()) == {"helpful_base", "koala", "vicuna"}
    assert mat.cost[:, 1].mean() > mat.cost[:, 0].mean()


def test_unknown_format_and_missing_path():
    with pytest.raises(BadRequest, match="known: "):
        load_outcomes([ROUTERBENCH], "nope")
    with pytest.raises(BadRequest, match="not found"):
        load_outcomes(["/nonexistent/x.csv"], "routerbench")


def test_iter_json_array_line_numbers():
    text = '[\n {"a": 1},\n "x",\n\n {"b": [1,\n 2]}\n]'
    assert list(iter_json_array(text)) == [(2, {"a": 1}), (3, "x"), (5, {"b": [1, 2]})]


def test_matrix_split_is_stratified_and_disjoint():
    mat = load_outcomes(
        [ROUTERDC / "humaneval_train.json", ROUTERDC / "arc_challenge_train.json"], "routerdc"
    )
    tr, te = mat.split(0.7, seed=1)
    assert tr.n + te.n == mat.n
    assert not set(tr.query_ids.tolist()) & set(te.query_ids.tolist())
    assert set(tr.category_list()) == set(te.category_list()) == {"humaneval", "arc_challenge"}
