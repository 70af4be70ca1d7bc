"""The price table (eval/outcomes/prices.yaml): USD per 1M prompt and completion tokens per model, by section
(one per outcome format), and the characters-per-token rule that turns text lengths into token counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import BadRequest

PRICES_FILE = Path(__file__).resolve().parent / "prices.yaml"


@dataclass(frozen=True, slots=True)
class Price:
    input_per_m: float  # USD per 1M prompt tokens
    output_per_m: float  # USD per 1M completion tokens

    def cost(self, prompt_tokens: np.ndarray | float, completion_tokens: np.ndarray | float) -> Any:
        return (
            np.asarray(prompt_tokens) * self.input_per_m + np.asarray(completion_tokens) * self.output_per_m
        ) / 1e6


@dataclass(frozen=True, slots=True)
class PriceTable:
    chars_per_token: float
    models: dict[str, Price]
    default_output_tokens: int = 256  # assumed completion length where a format has no answers

    def price(self, model: str) -> Price:
        try:
            return self.models[model]
        except KeyError:
            raise BadRequest(
                f"no price for model {model!r} in the price table; add it to eval/outcomes/prices.yaml "
                f"(known: {', '.join(sorted(self.models))})"
            ) from None

    def tokens(self, chars: np.ndarray | float) -> np.ndarray:
        """Token estimate from a character count: ceil(chars / chars_per_token), at least 1."""
        return np.maximum(1.0, np.ceil(np.asarray(chars, dtype=np.float64) / self.chars_per_token))


def load_prices(section: str, path: Path | None = None) -> PriceTable:
    """The `section` ("mmlu-pro" or "routerdc") of the price table (eval/outcomes/prices.yaml by default)."""
    import yaml

    path = path or PRICES_FILE
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadRequest(f"cannot read price table {path}: {exc}") from None
    sec = doc.get(section) or {}
    cpt = float(doc.get("chars_per_token", 4.0))
    models: dict[str, Price] = {}
    if "per_billion_params" in sec:  # priced by size
        rate = sec["per_billion_params"]
        for name, spec in (sec.get("models") or {}).items():
            b = float(spec["params_b"])
            models[name] = Price(b * float(rate["input"]), b * float(rate["output"]))
    else:
        for name, spec in (sec.get("models") or {}).items():
            models[name] = Price(float(spec["input"]), float(spec["output"]))
    return PriceTable(cpt, models, int(sec.get("default_output_tokens", 256)))


def column_costs(
    prices: PriceTable,
    models: Sequence[str],
    prompt_tokens: np.ndarray,
    completion_tokens: np.ndarray | float,
) -> np.ndarray:
    """(n, m) USD: each model's price × the prompt tokens (n,) and its completion tokens, given per
    column as `completion_tokens[:, j]` ((n, m) array) or one number for every query."""
    if not len(prompt_tokens):
        return np.zeros((0, len(models)))
    per_query = np.asarray(completion_tokens)
    return np.column_stack(
        [
            prices.price(mdl).cost(prompt_tokens, per_query[:, j] if per_query.ndim == 2 else per_query)
            for j, mdl in enumerate(models)
        ]
    )
