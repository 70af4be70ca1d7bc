"""The generic outcome format (eval/outcomes/generic.py): JSONL and CSV, round trip, malformed rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.outcomes import load_outcomes
from eval.outcomes.generic import messages_text, write_jsonl
from router.errors import BadRequest


def rows():
    return [
        {
            "id": "a",
            "prompt": "Is 91 prime?",
            "category": "math",
            "outcomes": {"big": {"quality": 1, "cost_usd": 0.01}, "small": {"quality": 0, "cost_usd": 0.001}},
        },
        {
            "id": "b",
            "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}],
            "category": "chat",
            "outcomes": {
                "big": {"quality": 0.5, "cost_usd": 0.02},
                "small": {"quality": 0.25, "cost_usd": 0.002},
            },
        },
    ]


def write(path, recs, extra=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + "".join(x + "\n" for x in extra))
    return path


def test_jsonl_loads_prompts_messages_and_categories(tmp_path):
    mat = load_outcomes([write(tmp_path / "o.jsonl", rows())], "jsonl")
    assert mat.models == ("big", "small") and mat.n == 2
    assert mat.texts == ("Is 91 prime?", "Hi")
    assert mat.categories.tolist() == ["math", "chat"]
    assert np.allclose(mat.quality, [[1, 0], [0.5, 0.25]])
    assert np.allclose(mat.cost, [[0.01, 0.001], [0.02, 0.002]])
    assert not mat.issues


def test_round_trip(tmp_path):
    mat = load_outcomes([write(tmp_path / "o.jsonl", rows())], "jsonl")
    again = load_outcomes([write_jsonl(mat, tmp_path / "copy.jsonl")], "jsonl")
    assert again.texts == mat.texts and again.models == mat.models
    assert np.array_equal(again.quality, mat.quality) and np.array_equal(again.cost, mat.cost)
    assert again.categories.tolist() == mat.categories.tolist()


def test_tokens_are_priced_from_the_price_file(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("chars_per_token: 4\ngeneric:\n  models:\n    big: {input: 10, output: 30}\n")
    rec = {
        "id": "t",
        "prompt": "x",
        "outcomes": {"big": {"quality": 1, "prompt_tokens": 1000, "completion_tokens": 100}},
    }
    from eval.outcomes import load_prices

    mat = load_outcomes([write(tmp_path / "o.jsonl", [rec])], "jsonl", prices=load_prices("generic", prices))
    assert mat.cost[0, 0] == pytest.approx((1000 * 10 + 100 * 30) / 1e6)
    assert mat.response_chars[0, 0] == pytest.approx(400)  # 100 tokens × 4 chars: the answer length
    assert mat.categories is None


def test_malformed_rows_name_file_and_line(tmp_path):
    bad = [
        {
            "id": "c",
            "prompt": "q",
            "outcomes": {"big": {"quality": 2, "cost_usd": 0.1}, "small": {"quality": 0, "cost_usd": 0}},
        },
        {"id": "d", "prompt": "q", "outcomes": {"big": {"quality": 1, "cost_usd": 0.1}}},
        {
            "id": "e",
            "prompt": 5,
            "outcomes": {"big": {"quality": 1, "cost_usd": 0.1}, "small": {"quality": 0, "cost_usd": 0}},
        },
        {
            "id": "f",
            "prompt": "q",
            "outcomes": {"big": {"quality": 1}, "small": {"quality": 0, "cost_usd": 0}},
        },
    ]
    path = write(tmp_path / "o.jsonl", rows() + bad, extra=["{not json"])
    mat = load_outcomes([path], "jsonl")
    assert mat.n == 2
    where = [(i.file, i.line) for i in mat.issues]
    assert where == [(str(path), n) for n in (3, 4, 5, 6, 7)]
    msgs = [i.message for i in mat.issues]
    assert "not in [0, 1]" in msgs[0] and "small" in msgs[1] and "prompt" in msgs[2] and "cost_usd" in msgs[3]
    with pytest.raises(BadRequest, match=rf"{path.name}:3:"):
        load_outcomes([path], "jsonl", strict=True)


def test_csv_with_messages_and_line_numbers(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text(
        "id,prompt,category,big|quality,big|cost_usd,small|quality,small|cost_usd\n"
        "a,Is 91 prime?,math,1,0.01,0,0.001\n"
        '"b","[{""role"": ""user"", ""content"": ""Hi""}]",chat,0.5,0.02,0.25,0.002\n'
        "c,q,math,1,,0,0.001\n"
    )
    mat = load_outcomes([path], "csv")
    assert mat.texts == ("Is 91 prime?", "Hi") and mat.models == ("big", "small")
    assert [(i.file, i.line) for i in mat.issues] == [(str(path), 4)]


def test_messages_text_matches_the_service_rule():
    msgs = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "second"},
    ]
    assert messages_text(msgs) == "second\n\nfirst"
    with pytest.raises(ValueError):
        messages_text([{"role": "system", "content": "only"}])
