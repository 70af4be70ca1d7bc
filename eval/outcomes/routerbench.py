"""``routerbench``: RouterBench CSV; ``<model>`` correctness columns and real ``<model>|total_cost`` in
USD; the prompt is a Python-list string, parsed with ``ast.literal_eval``; category = ``eval_name``."""

from __future__ import annotations

import ast
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.outcomes.common import Issues, LoadRequest, float01, pick_models
from eval.outcomes.matrix import OutcomeMatrix
from router.errors import BadRequest


@dataclass
class _Rows:
    """The good rows of every file read so far; the model list is fixed by the first file."""

    models: list[str] | None = None
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    cats: list[str] = field(default_factory=list)
    quality: list[list[float]] = field(default_factory=list)
    cost: list[list[float]] = field(default_factory=list)
    chars: list[list[float]] = field(default_factory=list)


def _columns(f: Path, header: list[str], rows: _Rows, wanted: Sequence[str] | None) -> dict[str, int]:
    """Column index by name; checks that the file has the selected models (fixing them on the first)."""
    file_models = [h[: -len("|total_cost")] for h in header if h.endswith("|total_cost")]
    if not file_models:
        raise BadRequest(f"{f}: no '<model>|total_cost' columns; not a RouterBench CSV")
    if rows.models is None:
        rows.models = pick_models(file_models, wanted)
    missing = [mdl for mdl in rows.models if mdl not in file_models or mdl not in header]
    if missing:
        raise BadRequest(f"{f}: model column(s) missing: {', '.join(missing)}")
    col = {h: i for i, h in enumerate(header)}
    for name in ("prompt", "sample_id"):
        if name not in col:
            raise BadRequest(f"{f}: missing column {name!r}")
    return col


def _parse(
    row: list[str], col: dict[str, int], models: list[str]
) -> tuple[list[str], list[float], list[float]]:
    """(prompt parts, quality per model, cost per model) of one row; ValueError/SyntaxError when malformed."""
    prompt = ast.literal_eval(row[col["prompt"]])
    if isinstance(prompt, str):
        prompt = [prompt]
    if not isinstance(prompt, list | tuple) or not all(isinstance(p, str) for p in prompt):
        raise ValueError("prompt is not a list of strings")
    qs = [float01(row[col[mdl]]) for mdl in models]
    cs = [float(row[col[f"{mdl}|total_cost"]]) for mdl in models]
    if not all(math.isfinite(c) and c >= 0 for c in cs):
        raise ValueError("negative or non-finite cost")
    return list(prompt), qs, cs


def _read_file(f: Path, rows: _Rows, wanted: Sequence[str] | None, issues: Issues) -> None:
    with f.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise BadRequest(f"{f}: empty CSV") from None
        col = _columns(f, header, rows, wanted)
        models = rows.models
        assert models is not None
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if len(row) != len(header):
                issues.add(f, line, f"{len(row)} fields, header has {len(header)}")
                continue
            try:
                prompt, qs, cs = _parse(row, col, models)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                issues.add(f, line, f"{type(exc).__name__}: {str(exc)[:120]}")
                continue
            resp = [
                len(row[col[f"{mdl}|model_response"]]) if f"{mdl}|model_response" in col else 0
                for mdl in models
            ]
            rows.ids.append(row[col["sample_id"]])
            rows.texts.append("\n\n".join(prompt))
            rows.cats.append(row[col["eval_name"]] if "eval_name" in col else f.stem)
            rows.quality.append(qs)
            rows.cost.append(cs)
            rows.chars.append([float(x) for x in resp])


def load_routerbench(req: LoadRequest) -> OutcomeMatrix:
    # req.prices is not used: RouterBench carries real per-query costs
    files, issues = req.files(["*.csv"]), req.issues
    csv.field_size_limit(1 << 30)
    rows = _Rows()
    for f in files:
        _read_file(f, rows, req.models, issues)
    assert rows.models is not None
    mm = len(rows.models)
    return OutcomeMatrix(
        query_ids=np.array(rows.ids, dtype=object),
        texts=tuple(rows.texts),
        models=tuple(rows.models),
        quality=np.array(rows.quality, dtype=np.float64).reshape(-1, mm),
        cost=np.array(rows.cost, dtype=np.float64).reshape(-1, mm),
        categories=np.array(rows.cats, dtype=object),
        response_chars=np.array(rows.chars).reshape(-1, mm),
        source="routerbench",
        cost_note="real per-query cost in USD from RouterBench (<model>|total_cost)",
        issues=tuple(issues.items),
    )
