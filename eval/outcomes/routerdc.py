"""``routerdc``: RouterDC score JSON (``question``, ``scores{model: 0..1}``); no costs, so each model gets
a price from its parameter count (``routerdc`` section of eval/outcomes/prices.yaml) times estimated prompt
tokens plus a fixed assumed completion length; category = the file's dataset name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.outcomes.common import Issues, LoadRequest, float01, pick_models
from eval.outcomes.json_scan import iter_json_array
from eval.outcomes.matrix import OutcomeMatrix
from eval.outcomes.prices import PriceTable, column_costs, load_prices
from router.errors import BadRequest


def _routerdc_category(path: Path) -> str:
    return re.sub(r"[-_]?train$", "", path.stem) or path.stem


@dataclass
class _Rows:
    models: list[str] | None = None  # fixed by the first good record (or `models`)
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    cats: list[str] = field(default_factory=list)
    quality: list[list[float]] = field(default_factory=list)


def _read_file(
    f: Path, rows: _Rows, wanted: Sequence[str] | None, prices: PriceTable, issues: Issues
) -> None:
    cat = _routerdc_category(f)
    try:
        elements = list(iter_json_array(f.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise BadRequest(f"{f}: cannot read JSON: {exc}") from None
    for k, (line, rec) in enumerate(elements):
        if not _well_formed(rec):
            issues.add(f, line, "record needs a string 'question' and an object 'scores'")
            continue
        if rows.models is None:
            rows.models = pick_models(list(rec["scores"]), wanted)
            for mdl in rows.models:
                prices.price(mdl)
        try:
            qs = [float01(rec["scores"][mdl]) for mdl in rows.models]
        except KeyError as exc:
            issues.add(f, line, f"no score for model {exc}")
            continue
        except (TypeError, ValueError) as exc:
            issues.add(f, line, str(exc))
            continue
        rows.ids.append(f"{cat}:{k}")
        rows.texts.append(rec["question"])
        rows.cats.append(cat)
        rows.quality.append(qs)


def _well_formed(rec: Any) -> bool:
    return (
        isinstance(rec, dict) and isinstance(rec.get("question"), str) and isinstance(rec.get("scores"), dict)
    )


def load_routerdc(req: LoadRequest) -> OutcomeMatrix:
    files = [f for f in req.files(["*train*.json"]) if f.suffix == ".json"]
    prices, issues = req.prices or load_prices("routerdc"), req.issues
    rows = _Rows()
    for f in files:
        _read_file(f, rows, req.models, prices, issues)
    if rows.models is None:
        raise BadRequest("no usable RouterDC records")
    prompt_tok = prices.tokens(np.array([len(t) for t in rows.texts], dtype=np.float64))
    return OutcomeMatrix(
        query_ids=np.array(rows.ids, dtype=object),
        texts=tuple(rows.texts),
        models=tuple(rows.models),
        quality=np.array(rows.quality, dtype=np.float64).reshape(-1, len(rows.models)),
        cost=column_costs(prices, rows.models, prompt_tok, float(prices.default_output_tokens)),
        categories=np.array(rows.cats, dtype=object),
        source="routerdc",
        cost_note=(
            f"no costs in RouterDC: price by parameter count (eval/outcomes/prices.yaml) × (prompt tokens "
            f"≈ chars/{prices.chars_per_token:g} + {prices.default_output_tokens} assumed completion "
            "tokens)"
        ),
        issues=tuple(issues.items),
    )
