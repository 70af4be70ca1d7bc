"""Repository functions for API-key limits and usage: keyword-only, take a Session, return plain records.

Limits live on the `api_key` row (rpm, tpm, budget_usd, budget_period); spend lives in `key_usage`, one
row per key and budget period, so a new period starts from zero without any reset job:

    period_start = "YYYY-MM-DD" of the day (period "day"), of the 1st of the month ("month"), or "total".

Changing limits bumps the registry revision (like any admin change); adding usage does not (the
service writes it in batches and must not make every replica reload its snapshot)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import ApiKey, KeyUsage, utcnow
from registry.records import BUDGET_PERIODS, ApiKeyRecord, KeyLimits, KeyUsageRecord, UsageDelta
from registry.repository.base import UNSET, Unset, bump
from registry.repository.keys import key_record
from router.errors import BadRequest, NotFound


def period_start(period: str, now: datetime | None = None) -> str:
    """The key of the budget period that `now` (UTC) falls in."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if period == "day":
        return now.strftime("%Y-%m-%d")
    if period == "month":
        return now.strftime("%Y-%m-01")
    if period == "total":
        return "total"
    raise BadRequest(f"unknown budget period {period!r}: use one of {', '.join(BUDGET_PERIODS)}")


def _check_limit(value: Any, what: str) -> int | None:
    if value is None or value == 0:
        return None  # 0 clears the limit
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"invalid {what} {value!r}: a whole number ≥ 0 (0 = no limit)", param=what)
    return value


def _check_budget(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadRequest(f"invalid budget {value!r}: USD ≥ 0", param="budget_usd")
    return float(value) if value > 0 else None  # 0 clears the budget


def set_key_limits(
    session: Session,
    *,
    key_id: str,
    rpm: int | None | Unset = UNSET,
    tpm: int | None | Unset = UNSET,
    budget_usd: float | None | Unset = UNSET,
    budget_period: str | Unset = UNSET,
) -> ApiKeyRecord:
    """Change a key's limits (UNSET = keep; None or 0 = no limit)."""
    if budget_period is not UNSET and budget_period not in BUDGET_PERIODS:
        raise BadRequest(
            f"unknown budget period {budget_period!r}: use one of {', '.join(BUDGET_PERIODS)}",
            param="budget_period",
        )
    fields: dict[str, Any] = {}
    if rpm is not UNSET:
        fields["rpm"] = _check_limit(rpm, "rpm")
    if tpm is not UNSET:
        fields["tpm"] = _check_limit(tpm, "tpm")
    if budget_usd is not UNSET:
        fields["budget_usd"] = _check_budget(budget_usd)
    if budget_period is not UNSET:
        fields["budget_period"] = budget_period
    bump(session)
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"unknown API key {key_id!r}")
    for k, v in fields.items():
        setattr(row, k, v)
    session.flush()
    return key_record(row)


def key_limits(session: Session) -> dict[str, KeyLimits]:
    """The limits of every active key (unlimited keys too: their budget period files their usage)."""
    rows = session.execute(select(ApiKey).where(ApiKey.revoked_at.is_(None))).scalars()
    return {k.id: KeyLimits(k.id, k.rpm, k.tpm, k.budget_usd, k.budget_period or "month") for k in rows}


def add_usage(session: Session, *, deltas: Iterable[UsageDelta]) -> int:
    """Add batched usage to the keys' period rows (created on first use); returns the rows touched.
    Usage of keys that no longer exist is dropped."""
    merged: dict[tuple[str, str], list[float]] = {}
    for d in deltas:
        acc = merged.setdefault((d.key_id, d.period_start), [0, 0, 0, 0.0])
        acc[0] += d.requests
        acc[1] += d.prompt_tokens
        acc[2] += d.completion_tokens
        acc[3] += d.cost_usd
    known = {k for (k,) in session.execute(select(ApiKey.id).where(ApiKey.id.in_({k for k, _ in merged})))}
    touched = 0
    now = utcnow()
    for (key_id, start), (req, pt, ct, cost) in merged.items():
        if key_id not in known:
            continue
        row = session.get(KeyUsage, (key_id, start))
        if row is None:
            row = KeyUsage(
                key_id=key_id,
                period_start=start,
                requests=0,
                prompt_tokens=0,
                completion_tokens=0,
                cost_usd=0.0,
            )
            session.add(row)
        row.requests += int(req)
        row.prompt_tokens += int(pt)
        row.completion_tokens += int(ct)
        row.cost_usd += float(cost)
        row.updated_at = now
        touched += 1
    session.flush()
    return touched


def current_usage(session: Session, *, now: datetime | None = None) -> dict[str, KeyUsageRecord]:
    """Each key's usage in its current budget period (keys without usage yet are left out)."""
    periods: Mapping[str, str] = {
        k: period_start(p or "month", now)
        for k, p in session.execute(select(ApiKey.id, ApiKey.budget_period))
    }
    out: dict[str, KeyUsageRecord] = {}
    stmt = select(KeyUsage).where(KeyUsage.period_start.in_(set(periods.values())))
    for row in session.execute(stmt).scalars():
        if periods.get(row.key_id) == row.period_start:
            out[row.key_id] = KeyUsageRecord(
                row.key_id,
                row.period_start,
                row.requests,
                row.prompt_tokens,
                row.completion_tokens,
                row.cost_usd,
            )
    return out
