"""Skill scores: an expert's measured quality on a category, in [0, 1], with its sample count."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Category, Expert, SkillScore, utcnow
from registry.records import SkillScoreRecord
from registry.repository.base import aware, bump, flush
from registry.repository.experts import get_expert_row
from registry.validation import check_category_name, check_text
from router.errors import BadRequest, NotFound


def check_score(score: Any, n: Any, source: Any) -> tuple[float, int, str]:
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise BadRequest(f"invalid skill score {score!r}: must be in [0, 1]", param="score")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BadRequest(f"invalid sample count {n!r}: must be an integer ≥ 0", param="n")
    return float(score), n, check_text(source, "source")


def upsert_skill(
    session: Session, expert_id: int, category_id: int, score: float, n: int, source: str
) -> bool:
    """Set one skill score; True when it is new."""
    row = session.get(SkillScore, (expert_id, category_id))
    if row is None:
        session.add(
            SkillScore(
                expert_id=expert_id,
                category_id=category_id,
                score=score,
                n=n,
                source=source,
                updated_at=utcnow(),
            )
        )
        return True
    row.score, row.n, row.source, row.updated_at = score, n, source, utcnow()
    return False


def set_skill_scores(
    session: Session,
    *,
    expert: str,
    category: str | None = None,
    score: float | None = None,
    n: int = 0,
    source: str = "",
    scores: Mapping[str, float] | None = None,
    create_categories: bool = False,
) -> int:
    """Set an expert's measured skill on one category (`category=`, `score=`) or on several at once
    (`scores={category: score}`), all with the same `n` and `source`. Unknown categories are NotFound
    unless `create_categories`. Returns the new revision."""
    items = dict(scores or {})
    if category is not None:
        if score is None:
            raise BadRequest("set_skill_scores needs score= with category=", param="score")
        items[category] = score
    if not items:
        raise BadRequest("set_skill_scores needs category= and score=, or scores=", param="scores")
    checked = {check_category_name(c): check_score(s, n, source) for c, s in items.items()}
    revision = bump(session)
    exp = get_expert_row(session, expert)
    for cat_name, (s, cnt, src) in checked.items():
        cat = session.execute(select(Category).where(Category.name == cat_name)).scalar_one_or_none()
        if cat is None:
            if not create_categories:
                raise NotFound(f"unknown category {cat_name!r}", param="category")
            cat = Category(name=cat_name, description="", created_at=utcnow())
            session.add(cat)
            session.flush()
        upsert_skill(session, exp.id, cat.id, s, cnt, src)
    flush(session, f"skill scores of {expert!r}")
    return revision


def list_skill_scores(session: Session, *, expert: str | None = None) -> list[SkillScoreRecord]:
    stmt = (
        select(
            Expert.name,
            Category.name,
            SkillScore.score,
            SkillScore.n,
            SkillScore.source,
            SkillScore.updated_at,
        )
        .join(Expert, Expert.id == SkillScore.expert_id)
        .join(Category, Category.id == SkillScore.category_id)
        .order_by(Expert.name, Category.name)
    )
    if expert is not None:
        stmt = stmt.where(Expert.name == expert)
    return [
        SkillScoreRecord(expert=e, category=c, score=s, n=n, source=src, updated_at=aware(ts))  # type: ignore[arg-type]
        for e, c, s, n, src, ts in session.execute(stmt)
    ]
