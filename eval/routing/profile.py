"""Skill profiles from an offline routing evaluation into the registry (`coe experts profile --from-eval`).

The routing eval JSON carries `skills.scores` (model -> category -> mean quality on the training part)
and `skills.n` (category -> training queries). Each model is written to the expert of the same name,
or to the expert given by `--map MODEL=EXPERT`, with `registry.repository.set_skill_scores`, all in one
transaction: an unknown expert (or, without `create_categories`, an unknown category) raises before the
commit, so nothing is written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.errors import BadRequest, NotFound


@dataclass(frozen=True, slots=True)
class ProfileWrite:
    expert: str
    model: str
    scores: Mapping[str, float]
    n: Mapping[str, int]


def parse_map(items: Sequence[str]) -> dict[str, str]:
    """`MODEL=EXPERT` pairs into {model: expert}."""
    out: dict[str, str] = {}
    for item in items:
        model, sep, expert = item.partition("=")
        if not sep or not model.strip() or not expert.strip():
            raise BadRequest(f"--map expects MODEL=EXPERT, got {item!r}")
        out[model.strip()] = expert.strip()
    return out


def read_profiles(path: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    try:
        doc: Any = json.loads(Path(path).read_text())
        skills = doc["skills"]
        scores = {str(m): {str(c): float(s) for c, s in cs.items()} for m, cs in skills["scores"].items()}
        counts = {str(c): int(v) for c, v in skills.get("n", {}).items()}
    except FileNotFoundError:
        raise BadRequest(f"no such file: {path}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadRequest(f"{path} is not a `coe eval routing --json` result with skills: {exc}") from None
    return scores, counts


def plan(
    scores: Mapping[str, Mapping[str, float]],
    counts: Mapping[str, int],
    mapping: Mapping[str, str],
    *,
    only_mapped: bool = False,
) -> list[ProfileWrite]:
    unknown = [m for m in mapping if m not in scores]
    if unknown:
        raise BadRequest(
            f"--map names model(s) not in the eval result: {', '.join(unknown)}; models: {', '.join(scores)}"
        )
    models = [m for m in scores if m in mapping] if only_mapped else list(scores)
    return [
        ProfileWrite(
            expert=mapping.get(m, m),
            model=m,
            scores=dict(scores[m]),
            n={c: counts.get(c, 0) for c in scores[m]},
        )
        for m in models
    ]


def apply_profiles(
    registry: Any, writes: Sequence[ProfileWrite], *, source: str, create_categories: bool = False
) -> int:
    """Write every profile in one transaction; returns the registry revision after the writes."""
    from registry import repository as repo

    if not writes:
        raise BadRequest("nothing to write: no models in the eval result")
    revision = 0
    with registry.session() as s:
        known = {e.name for e in repo.list_experts(s)}
        missing = sorted({w.expert for w in writes if w.expert not in known})
        if missing:
            raise NotFound(
                f"unknown expert(s) in the registry: {', '.join(missing)} (map models to experts "
                f"with --map MODEL=EXPERT, or use --only-mapped); nothing written"
            )
        for w in writes:
            # one call per distinct n, since set_skill_scores takes one n for all its scores
            by_n: dict[int, dict[str, float]] = {}
            for c, sc in w.scores.items():
                by_n.setdefault(int(w.n.get(c, 0)), {})[c] = float(min(1.0, max(0.0, sc)))
            for n, sub in by_n.items():
                revision = repo.set_skill_scores(
                    s, expert=w.expert, scores=sub, n=n, source=source, create_categories=create_categories
                )
    return revision
