"""Repository functions for the decision log and feedback: keyword-only, take a Session, return records.

The service writes decisions in batches from a background thread (deploy/pipeline/decisions.py); clients score
completions with `POST /v1/feedback`; `coe decisions export` turns scored decisions into the generic
outcome format, and `coe experts profile --from-feedback` folds the scores into the skill scores:

Bayesian update per expert × category (a Beta prior with the current score as its mean):

    prior      Beta(α₀, β₀),  α₀ = s·k,  β₀ = (1 − s)·k
               s = the current skill score (0.5 when there is none),
               k = the prior strength: the score's sample count n when it has one, else `prior_strength`
               (default 10; 2 for an expert × category without any score, i.e. Beta(1, 1))
    evidence   m feedback scores x₁..x_m in [0, 1], each a fractional success
    posterior  α = α₀ + Σx,  β = β₀ + Σ(1 − x)
    new score  s' = α / (α + β) = (s·k + Σx) / (k + m),   new n = k + m

The category of a decision is its top category; its experts are those whose answer the client got.
Each feedback is applied once (`applied_at`), so running the command twice does not count it twice."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from registry.models import Category, DecisionRow, Expert, Feedback, SkillScore, utcnow
from registry.records import DecisionRecord, FeedbackRecord
from registry.repository.base import aware, bump
from registry.repository.skills import upsert_skill
from router.errors import BadRequest, NotFound

#: prior strength of a score without a sample count, and of an expert × category without a score
DEFAULT_PRIOR_STRENGTH = 10.0
UNSCORED_PRIOR = (0.5, 2.0)
MAX_COMMENT_CHARS = 4000


def record_decisions(session: Session, *, records: Iterable[DecisionRecord]) -> int:
    """Insert decisions (an id already logged is kept as it is); returns how many were new."""
    batch = {r.id: r for r in records}
    if not batch:
        return 0
    known = {i for (i,) in session.execute(select(DecisionRow.id).where(DecisionRow.id.in_(list(batch))))}
    for r in batch.values():
        if r.id in known:
            continue
        session.add(
            DecisionRow(
                id=r.id,
                created_at=r.created_at,
                key_id=r.key_id,
                policy=r.policy,
                categories=[[c, float(p)] for c, p in r.categories],
                experts=list(r.experts),
                answered_by=r.answered_by,
                cost_usd=float(r.cost_usd or 0.0),
                latency_ms=float(r.latency_ms or 0.0),
                cache=r.cache,
                prompt=r.prompt,
            )
        )
    session.flush()
    return len(batch) - len(known)


def prune_decisions(
    session: Session, *, retention_days: float | None, max_rows: int | None, now: datetime | None = None
) -> int:
    """Delete decisions older than `retention_days` and beyond the newest `max_rows` (their feedback
    goes with them); returns how many were deleted."""
    deleted = 0
    if retention_days is not None and retention_days > 0:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        old = [i for (i,) in session.execute(select(DecisionRow.id).where(DecisionRow.created_at < cutoff))]
        deleted += _delete(session, old)
    if max_rows is not None and max_rows > 0:
        total = session.execute(select(func.count()).select_from(DecisionRow)).scalar_one()
        if total > max_rows:
            stmt = (
                select(DecisionRow.id)
                .order_by(DecisionRow.created_at, DecisionRow.id)
                .limit(total - max_rows)
            )
            deleted += _delete(session, [i for (i,) in session.execute(stmt)])
    return deleted


def _delete(session: Session, ids: Sequence[str]) -> int:
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        session.execute(delete(Feedback).where(Feedback.decision_id.in_(chunk)))
        session.execute(delete(DecisionRow).where(DecisionRow.id.in_(chunk)))
    return len(ids)


def _record(d: DecisionRow, f: Feedback | None) -> DecisionRecord:
    return DecisionRecord(
        id=d.id,
        created_at=aware(d.created_at),  # type: ignore[arg-type]
        key_id=d.key_id,
        policy=d.policy,
        categories=tuple((str(c), float(p)) for c, p in d.categories or ()),
        experts=tuple(d.experts or ()),
        answered_by=d.answered_by,
        cost_usd=d.cost_usd,
        latency_ms=d.latency_ms,
        cache=d.cache,
        prompt=d.prompt,
        feedback_score=f.score if f is not None else None,
        feedback_comment=f.comment if f is not None else None,
    )


def list_decisions(
    session: Session, *, limit: int | None = 50, with_feedback: bool = False
) -> list[DecisionRecord]:
    """Decisions, newest first, with their feedback; `with_feedback` keeps only the scored ones."""
    stmt = select(DecisionRow, Feedback).outerjoin(Feedback, Feedback.decision_id == DecisionRow.id)
    if with_feedback:
        stmt = stmt.where(Feedback.decision_id.isnot(None))
    stmt = stmt.order_by(DecisionRow.created_at.desc(), DecisionRow.id.desc())
    if limit is not None:
        if limit < 1:
            raise BadRequest(f"invalid limit {limit}: must be ≥ 1", param="limit")
        stmt = stmt.limit(limit)
    return [_record(d, f) for d, f in session.execute(stmt)]


def check_feedback(score: Any, comment: Any) -> tuple[float, str]:
    if (
        isinstance(score, bool)
        or not isinstance(score, int | float)
        or not math.isfinite(score)
        or not 0.0 <= score <= 1.0
    ):
        raise BadRequest(f"invalid score {score!r}: a number in [0, 1]", param="score", code="invalid_value")
    if comment is None:
        comment = ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        raise BadRequest(
            f"comment must be a string of at most {MAX_COMMENT_CHARS} characters", param="comment"
        )
    return float(score), comment


def add_feedback(
    session: Session, *, decision_id: str, score: Any, comment: Any = "", key_id: str | None = None
) -> FeedbackRecord:
    """Score a logged completion (a second score replaces the first and is applied afresh)."""
    value, text = check_feedback(score, comment)
    if not isinstance(decision_id, str) or session.get(DecisionRow, decision_id) is None:
        raise NotFound(f"unknown completion id {decision_id!r}", param="id", code="completion_not_found")
    now = utcnow()
    row = session.get(Feedback, decision_id)
    if row is None:
        row = Feedback(decision_id=decision_id, score=value, comment=text, key_id=key_id, created_at=now)
        session.add(row)
    else:
        row.score, row.comment, row.key_id, row.created_at, row.applied_at = value, text, key_id, now, None
    session.flush()
    return FeedbackRecord(decision_id, value, text, key_id, now)


def outcome_rows(records: Iterable[DecisionRecord]) -> list[dict[str, Any]]:
    """Scored decisions in the generic outcome format (one JSON object a line in the export):
    {"id", "prompt", "category"?, "outcomes": {model: {"quality": score, "cost_usd": cost}}}."""
    rows = []
    for r in records:
        if r.feedback_score is None:
            continue
        model = r.answered_by or (r.experts[0] if r.experts else "unknown")
        row: dict[str, Any] = {"id": r.id, "prompt": r.prompt}
        if r.categories:
            row["category"] = r.categories[0][0]
        row["outcomes"] = {model: {"quality": r.feedback_score, "cost_usd": r.cost_usd}}
        rows.append(row)
    return rows


# --- profile from feedback -------------------------------------------------------------------------


def posterior(prior_score: float, prior_n: float, scores: Sequence[float]) -> tuple[float, float]:
    """(new score, new n) of the Beta update in the module docstring: (s·k + Σx) / (k + m)."""
    k = max(0.0, float(prior_n))
    total = k + len(scores)
    if total == 0:
        return prior_score, 0.0
    return (prior_score * k + sum(scores)) / total, total


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    expert: str
    category: str
    prior_score: float
    prior_n: float
    feedback: int
    score: float
    n: int


def profile_from_feedback(
    session: Session, *, prior_strength: float | None = None, source: str = "feedback", dry_run: bool = False
) -> list[ProfileUpdate]:
    """Fold every not-yet-applied feedback into the skill scores (one transaction; see the module
    docstring for the formula). Unknown experts or categories are skipped, not created."""
    if prior_strength is not None and prior_strength < 0:
        raise BadRequest("--prior-strength must be ≥ 0", param="prior_strength")
    stmt = (
        select(Feedback, DecisionRow)
        .join(DecisionRow, DecisionRow.id == Feedback.decision_id)
        .where(Feedback.applied_at.is_(None))
    )
    pending = list(session.execute(stmt))
    evidence: dict[tuple[str, str], list[float]] = {}
    for f, d in pending:
        if not d.categories:
            continue
        category = str(d.categories[0][0])
        for expert in d.experts or ([d.answered_by] if d.answered_by else []):
            evidence.setdefault((str(expert), category), []).append(float(f.score))
    experts = {e.name: e.id for e in session.execute(select(Expert)).scalars()}
    categories = {c.name: c.id for c in session.execute(select(Category)).scalars()}
    current: Mapping[tuple[int, int], SkillScore] = {
        (s.expert_id, s.category_id): s for s in session.execute(select(SkillScore)).scalars()
    }
    updates: list[ProfileUpdate] = []
    for (expert, category), xs in sorted(evidence.items()):
        if expert not in experts or category not in categories:
            continue
        row = current.get((experts[expert], categories[category]))
        if row is None:
            s0, k = UNSCORED_PRIOR
        else:
            s0 = row.score
            k = float(row.n) if row.n > 0 else DEFAULT_PRIOR_STRENGTH
        if prior_strength is not None:
            k = prior_strength
        score, n = posterior(s0, k, xs)
        updates.append(ProfileUpdate(expert, category, s0, k, len(xs), score, int(round(n))))
    if dry_run:
        return updates
    if updates:
        bump(session)
        for u in updates:
            upsert_skill(
                session, experts[u.expert], categories[u.category], min(1.0, max(0.0, u.score)), u.n, source
            )
    now = utcnow()
    for f, _ in pending:
        f.applied_at = now
    session.flush()
    return updates
