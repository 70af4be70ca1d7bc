"""The JSON shape of registry records, shared by `coe … --json` listings and the admin REST API, so a
field has one name everywhere (`name`, `base_url`, `model`, `capabilities`, …)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from registry.records import ApiKeyRecord, CategoryRecord, ExpertRecord, SkillScoreRecord


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def expert_dict(e: ExpertRecord) -> dict[str, Any]:
    return {k: _plain(v) for k, v in asdict(e).items()}


def category_dict(c: CategoryRecord) -> dict[str, Any]:
    return {
        "name": c.name,
        "description": c.description,
        "experts": [{"expert": n, "rank": r} for n, r in c.experts],
    }


def skill_dict(k: SkillScoreRecord) -> dict[str, Any]:
    return {"expert": k.expert, "category": k.category, "score": k.score, "n": k.n, "source": k.source}


def key_dict(k: ApiKeyRecord) -> dict[str, Any]:
    """Every field of the key record (limits and budgets too, once the record has them); never the key."""
    return {k2: _plain(v) for k2, v in asdict(k).items()}
