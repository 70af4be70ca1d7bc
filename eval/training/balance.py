"""Weighing the sources of a category evenly (`--source-balance`, issue 25).

Every category of the `--format mix` training set is taught by several sources of very different sizes:
`math` by GSM8K's 1,500 word problems and 500 more, MATH-500, MMLU-Pro's maths, and a few dozen real
requests (Arena-Hard, Arena-Bench, Open-Assistant) that ask for a proof or a probability; `coding` by
HumanEval's docstrings and the real "how do I … in Docker" questions. Counted row by row the largest source
decides what a category looks like. `source_weights` gives each row a weight so that the sources of a
category weigh more evenly, used by both heads (`eval.training.train.fit_classifier`) and by the
fine-tuning loss (`eval.training.finetune`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from router.errors import BadRequest

#: `source_weights`' power in `coe router train` / `coe eval sources` (--source-balance), chosen on the real
#: folds of `coe eval sources` (docs/router.md, "Sources weighed evenly"): 0, 0.5 and 1 compared
SOURCE_POWER = 0.5


def source_weights(
    labels: Sequence[str],
    sources: Sequence[str],
    power: float,
    group: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Per-row weights that even out the sources within each category: a row of category c from source s
    weighs (n_c / (S_c * n_cs)) ** power (S_c: the sources labelling c, n_cs their rows), scaled so each
    category keeps its total weight n_c (class balancing stays `CLASS_WEIGHT`'s). power 0: every row 1;
    power 1: each source as heavy as any other in a category, however few rows it brings (GSM8K's 1,500
    word problems and Arena-Hard's 30 real maths requests then teach `math` equally). `group` (source ->
    group, `check_balance`'s): weigh those groups evenly instead; a source it lacks is its own group."""
    lab = np.asarray(labels)
    src = np.asarray([(group or {}).get(s, s) for s in sources])
    w = np.ones(len(lab), dtype=np.float64)
    if power == 0:
        return w
    for c in np.unique(lab):
        in_c = lab == c
        names, counts = np.unique(src[in_c], return_counts=True)
        raw = (in_c.sum() / (len(names) * counts.astype(np.float64))) ** power
        per_row = raw[np.searchsorted(names, src[in_c])]
        w[in_c] = per_row * in_c.sum() / per_row.sum()
    return w


def check_balance(power: float | None, by: str, fmt: str = "mix") -> tuple[float, dict[str, str]]:
    """`--source-balance` (None: SOURCE_POWER) and `--balance-by` checked: (power, source -> group; empty
    for each source its own group); a bad value is a BadRequest (one line from the CLI)."""
    if power is None:
        power = SOURCE_POWER
    if not 0.0 <= power <= 1.0:
        raise BadRequest(f"--source-balance must be between 0 and 1, got {power}")
    if by == "source":
        return power, {}
    if by != "real" or fmt != "mix":
        raise BadRequest(f"--balance-by must be 'source' or, with --format mix, 'real'; got {by!r}")
    from eval.data.mix import balance_groups

    return power, balance_groups()
