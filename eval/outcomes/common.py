"""What every outcome loader shares: its request (`LoadRequest`), where the data lives, the malformed-row
collector, path expansion, value checks, model selection and the row limit."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.outcomes.matrix import OutcomeMatrix, RowIssue
from eval.outcomes.prices import PriceTable
from router.errors import BadRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def resolve_data_path(p: str | Path) -> Path:
    """A data path as given; relative paths that do not exist from the cwd are tried from the repo root
    (so `../shared/data/...` works from anywhere)."""
    path = Path(p)
    if path.exists() or path.is_absolute():
        return path
    alt = REPO_ROOT / path
    return alt if alt.exists() else path


class Issues:
    """The malformed rows of one load: kept as `RowIssue`s, or the first one raised with `strict`."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[RowIssue] = []

    def add(self, file: str | Path, line: int, message: str) -> None:
        issue = RowIssue(str(file), line, message)
        if self.strict:
            raise BadRequest(f"malformed row: {issue}")
        self.items.append(issue)


@dataclass(frozen=True)
class LoadRequest:
    """What one load asks of a format's loader: the data paths, the models wanted (None: every model
    the data has), the price table (None: the format's section of eval/outcomes/prices.yaml) and the
    collector of malformed rows. `load_outcomes` builds it and applies the row limit to the result."""

    paths: Sequence[str | Path]
    models: Sequence[str] | None
    prices: PriceTable | None
    issues: Issues

    def files(self, patterns: Sequence[str]) -> list[Path]:
        """The files of `paths` (folders searched for `patterns`)."""
        return expand(self.paths, patterns)


def expand(paths: Iterable[str | Path], patterns: Sequence[str]) -> list[Path]:
    """Files as given, and the files matching `patterns` under each folder given (sorted)."""
    out: list[Path] = []
    for p in paths:
        path = resolve_data_path(p)
        if path.is_dir():
            found = sorted({f for pat in patterns for f in path.rglob(pat)})
            if not found:
                raise BadRequest(f"no {' / '.join(patterns)} files under {path}")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise BadRequest(f"data path not found: {p}")
    return out


def float01(value: Any) -> float:
    x = float(value)
    if not math.isfinite(x) or x < 0 or x > 1:
        raise ValueError(f"value {value!r} not in [0, 1]")
    return x


def limit_rows(mat: OutcomeMatrix, limit: int | None) -> OutcomeMatrix:
    return mat if limit is None or limit >= mat.n else mat.take(np.arange(limit))


def pick_models(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return list(available)
    missing = [w for w in wanted if w not in available]
    if missing:
        raise BadRequest(f"unknown model(s) {', '.join(missing)}; known: {', '.join(available)}")
    return list(wanted)
