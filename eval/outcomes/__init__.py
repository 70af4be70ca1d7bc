"""Outcome matrices: how well (quality in [0, 1]) and at what price (USD) each model answered each
query, loaded from the public formats in ../shared/data (see SOURCES.md there).

One module per part:

    matrix.py       OutcomeMatrix (n queries × m models), RowIssue
    prices.py       the price table (eval/outcomes/prices.yaml): USD per 1M tokens, chars-per-token estimate
    json_scan.py    iter_json_array: a JSON array element by element, with line numbers
    common.py       what the loaders share (LoadRequest, paths, malformed-row collector, model selection)
    mmlu_pro.py     ``mmlu-pro``: TIGER-AI-Lab MMLU-Pro model-output zips (and the one zip reader)
    routerbench.py  ``routerbench``: RouterBench CSV with real per-query costs
    routerdc.py     ``routerdc``: RouterDC score JSON, priced by parameter count
    alpaca_eval.py  ``alpaca-eval``: AlpacaEval annotations, quality from the judge's preference
    generic.py      ``jsonl`` / ``csv``: the generic outcome format (id, prompt or OpenAI messages,
                    optional category, per-model quality and cost_usd or token counts)

Token counts are estimated from characters (``chars_per_token`` in eval/outcomes/prices.yaml, 4 by default:
OpenAI's rule of thumb for English) wherever a format has no real costs.

Malformed rows never vanish silently: each becomes a `RowIssue` (file, line, message) kept in
`OutcomeMatrix.issues` (the CLI prints them), or a `BadRequest` when the loader runs with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from eval.outcomes.alpaca_eval import load_alpaca_eval
from eval.outcomes.common import REPO_ROOT, SHARED_DATA, Issues, LoadRequest, limit_rows, resolve_data_path
from eval.outcomes.generic import load_csv, load_jsonl
from eval.outcomes.json_scan import iter_json_array
from eval.outcomes.matrix import OutcomeMatrix, RowIssue
from eval.outcomes.mmlu_pro import load_mmlu_pro, mmlu_text, read_model_outputs
from eval.outcomes.prices import PRICES_FILE, Price, PriceTable, load_prices
from eval.outcomes.routerbench import load_routerbench
from eval.outcomes.routerdc import load_routerdc
from router.errors import BadRequest

Loader = Callable[[LoadRequest], OutcomeMatrix]
LOADERS: dict[str, Loader] = {
    "mmlu-pro": load_mmlu_pro,
    "routerbench": load_routerbench,
    "routerdc": load_routerdc,
    "alpaca-eval": load_alpaca_eval,
    "jsonl": load_jsonl,  # generic outcome format, eval/outcomes/generic.py
    "csv": load_csv,
}


def load_outcomes(
    paths: Sequence[str | Path],
    fmt: str,
    *,
    models: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = False,
    prices: PriceTable | None = None,
) -> OutcomeMatrix:
    """Load `paths` in format `fmt` (a key of LOADERS) into one OutcomeMatrix."""
    try:
        loader = LOADERS[fmt]
    except KeyError:
        raise BadRequest(f"unknown format {fmt!r}; known: {', '.join(LOADERS)}") from None
    if not paths:
        raise BadRequest("no data paths given")
    mat = limit_rows(loader(LoadRequest(paths, models, prices, Issues(strict))), limit)
    if mat.n == 0:
        raise BadRequest(
            f"no usable queries in {', '.join(map(str, paths))} ({len(mat.issues)} malformed rows)"
        )
    return mat


__all__ = [
    "LOADERS",
    "PRICES_FILE",
    "REPO_ROOT",
    "SHARED_DATA",
    "LoadRequest",
    "Loader",
    "OutcomeMatrix",
    "Price",
    "PriceTable",
    "RowIssue",
    "iter_json_array",
    "load_alpaca_eval",
    "load_mmlu_pro",
    "load_outcomes",
    "load_prices",
    "load_routerbench",
    "load_routerdc",
    "mmlu_text",
    "read_model_outputs",
    "resolve_data_path",
]
