"""``alpaca-eval``: AlpacaEval annotations (one folder per model); quality = preference − 1 clipped to
[0, 1] (2 → 1: the model beat the GPT-4-turbo baseline); cost = the price table × tokens estimated from
the instruction and the output (AlpacaEval's ``price_per_example`` is the judge's); models joined on
the instruction; category = ``dataset``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from eval.outcomes.common import Issues, LoadRequest, pick_models
from eval.outcomes.json_scan import iter_json_array
from eval.outcomes.matrix import OutcomeMatrix
from eval.outcomes.prices import column_costs, load_prices
from router.errors import BadRequest

#: model -> instruction -> (quality, output length in characters, dataset)
_PerModel = dict[str, dict[str, tuple[float, float, str]]]


def _record(rec: Any) -> tuple[str, str, float]:
    """(model, instruction, preference) of one annotation; KeyError/TypeError/ValueError when malformed."""
    if not isinstance(rec, dict):
        raise ValueError("record is not an object")
    mdl = str(rec["generator_2"])
    instr = str(rec["instruction"])
    pref = float(rec["preference"])
    if not math.isfinite(pref):
        raise ValueError("non-finite preference")
    return mdl, instr, pref


def _read_file(f: Path, per_model: _PerModel, issues: Issues) -> None:
    try:
        elements = list(iter_json_array(f.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise BadRequest(f"{f}: cannot read JSON: {exc}") from None
    for line, rec in elements:
        try:
            mdl, instr, pref = _record(rec)
        except (KeyError, TypeError, ValueError) as exc:
            issues.add(f, line, f"{type(exc).__name__}: {exc}")
            continue
        rows = per_model.setdefault(mdl, {})
        if instr in rows:
            issues.add(f, line, f"duplicate instruction for {mdl}")
            continue
        q = min(1.0, max(0.0, pref - 1.0))
        rows[instr] = (q, float(len(str(rec.get("output_2") or ""))), str(rec.get("dataset", "")))


def load_alpaca_eval(req: LoadRequest) -> OutcomeMatrix:
    prices, issues = req.prices or load_prices("alpaca-eval"), req.issues
    per_model: _PerModel = {}
    for f in req.files(["annotations.json"]):
        _read_file(f, per_model, issues)
    chosen = pick_models(sorted(per_model), req.models)
    for mdl in chosen:
        prices.price(mdl)
    common = set.intersection(*(set(per_model[mdl]) for mdl in chosen)) if chosen else set()
    instrs = sorted(common)
    first = per_model[chosen[0]]
    mm = len(chosen)
    chars = np.array([[per_model[mdl][s][1] for mdl in chosen] for s in instrs]).reshape(-1, mm)
    prompt_tok = prices.tokens(np.array([len(s) for s in instrs], dtype=np.float64))
    return OutcomeMatrix(
        query_ids=np.array([f"alpaca:{i}" for i in range(len(instrs))], dtype=object),
        texts=tuple(instrs),
        models=tuple(chosen),
        quality=np.array([[per_model[mdl][s][0] for mdl in chosen] for s in instrs]).reshape(-1, mm),
        cost=column_costs(prices, chosen, prompt_tok, prices.tokens(chars)),
        categories=np.array([first[s][2] for s in instrs], dtype=object),
        response_chars=chars,
        source="alpaca-eval",
        cost_note=(
            "price table (eval/outcomes/prices.yaml) × tokens ≈ ceil(chars / "
            f"{prices.chars_per_token:g}) of instruction and output; AlpacaEval's price_per_example "
            "is the judge's price, not the generator's"
        ),
        issues=tuple(issues.items),
    )
