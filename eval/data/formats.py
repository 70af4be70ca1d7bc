"""`--format` for the router commands: one name per kind of labelled data, and the loader that reads it
(eval/data/datasets.py for MMLU-Pro, JSONL and CSV; eval/data/mix.py for the documented mix of sources)."""

from __future__ import annotations

from pathlib import Path

from eval.data.datasets import DataError, Example, load_csv, load_jsonl, load_mmlu_pro, sample
from eval.data.mix import load_mix

FORMATS = ("mmlu-pro", "mix", "jsonl", "csv")


def load_examples(
    path: str | Path,
    fmt: str,
    *,
    text_field: str = "text",
    label_field: str = "label",
    limit: int | None = None,
    seed: int = 0,
) -> list[Example]:
    if fmt == "mmlu-pro":
        examples = load_mmlu_pro(path)
    elif fmt == "mix":
        examples = load_mix(path, seed=seed)
    elif fmt == "jsonl":
        examples = load_jsonl(path, text_field, label_field)
    elif fmt == "csv":
        examples = load_csv(path, text_field, label_field)
    else:
        raise DataError(f"unknown data format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not examples:
        raise DataError(f"{path}: no examples")
    return sample(examples, limit, seed)
