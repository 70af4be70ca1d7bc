"""Labelled-text loaders: JSONL/CSV fields, malformed rows named by file and line, MMLU-Pro zips."""

import pytest

from eval.data.datasets import DataError, sample
from eval.data.formats import load_examples
from tests.router._shared import MMLU_ZIP, mmlu_examples, needs_mmlu


def test_jsonl_fields_and_errors(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"q": "first", "cat": "a"}\n\n{"q": "second", "cat": "b"}\n')
    exs = load_examples(p, "jsonl", text_field="q", label_field="cat")
    assert [(e.text, e.label) for e in exs] == [("first", "a"), ("second", "b")]
    p.write_text('{"q": "first", "cat": "a"}\n{"q": "second"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: missing field 'cat'"):
        load_examples(p, "jsonl", text_field="q", label_field="cat")
    p.write_text('{"q": "first", "cat": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load_examples(p, "jsonl", text_field="q", label_field="cat")


def test_csv_fields_and_errors(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nhello,a\nworld,b\n")
    assert [e.label for e in load_examples(p, "csv")] == ["a", "b"]
    p.write_text("text,label\nhello,a\nworld,\n")
    with pytest.raises(DataError, match=r"d\.csv:3: empty field 'label'"):
        load_examples(p, "csv")
    with pytest.raises(DataError, match="no column 'question'"):
        load_examples(p, "csv", text_field="question")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="known formats: mmlu-pro, mix, jsonl, csv"):
        load_examples(tmp_path, "parquet")
    with pytest.raises(DataError, match="cannot read"):
        load_examples(tmp_path / "none.jsonl", "jsonl")


def test_sample_is_seeded_subset():
    from eval.data.datasets import Example

    exs = [Example(text=str(i), label=str(i % 3)) for i in range(100)]
    a, b = sample(exs, 10, seed=1), sample(exs, 10, seed=1)
    assert a == b and len(a) == 10 and a != exs[:10]


@pytest.mark.shared_data
@needs_mmlu
def test_mmlu_pro_zip():
    exs = mmlu_examples()
    assert len(exs) > 12000
    assert len({e.label for e in exs}) == 14
    assert {e.family for e in exs} >= {"ori_mmlu", "stemez", "theoremQA", "scibench"}
    ex = next(e for e in exs if e.options)
    assert ex.with_options_text().startswith(ex.text) and "\nA. " in ex.with_options_text()
    assert MMLU_ZIP.suffix == ".zip"
