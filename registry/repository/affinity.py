"""Session affinity: continuation key -> the expert that answered, shared by every ingress replica.

Keys are opaque strings of at most AFFINITY_KEY_LEN characters (deploy/pipeline/affinity.py writes
digests: `tool:…`, `resp:…`, `session:…`). Remembering a key again replaces its expert and expiry (an
upsert, safe under concurrent writers on SQLite and PostgreSQL). Expired rows read as absent and
`purge_expired_affinity` deletes them. Runtime data: it does not bump the registry revision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.models import AFFINITY_KEY_LEN, NAME_LEN, SessionAffinity, utcnow
from router.errors import BadRequest

#: the most keys one call reads or writes (a request's open tool calls, its response id, its session)
MAX_KEYS = 256


def _check_keys(keys: Sequence[str]) -> list[str]:
    if isinstance(keys, str):
        raise BadRequest("affinity keys must be a sequence of strings, not one string", param="keys")
    out = list(dict.fromkeys(keys))
    if len(out) > MAX_KEYS:
        raise BadRequest(f"at most {MAX_KEYS} affinity keys at once, got {len(out)}", param="keys")
    for k in out:
        if not isinstance(k, str) or not k or len(k) > AFFINITY_KEY_LEN:
            raise BadRequest(f"invalid affinity key {k!r}: 1-{AFFINITY_KEY_LEN} characters", param="keys")
    return out


def remember_affinity(
    session: Session, *, keys: Sequence[str], expert: str, ttl_s: float, now: datetime | None = None
) -> int:
    """Map every key to `expert` until now + `ttl_s` (replacing what they mapped to); returns how many."""
    checked = _check_keys(keys)
    if not isinstance(expert, str) or not expert or len(expert) > NAME_LEN:
        raise BadRequest(f"invalid expert name {expert!r}", param="expert")
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, int | float)
        or not math.isfinite(ttl_s)
        or ttl_s <= 0
    ):
        raise BadRequest(f"invalid affinity TTL {ttl_s!r}: seconds > 0", param="ttl_s")
    if not checked:
        return 0
    now = now or utcnow()
    rows = [
        {"key": k, "expert": expert, "updated_at": now, "expires_at": now + timedelta(seconds=ttl_s)}
        for k in checked
    ]
    insert: Any = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(SessionAffinity).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SessionAffinity.key],
        set_={
            "expert": stmt.excluded.expert,
            "updated_at": stmt.excluded.updated_at,
            "expires_at": stmt.excluded.expires_at,
        },
    )
    session.execute(stmt)
    return len(checked)


def affinity_expert(session: Session, *, keys: Sequence[str], now: datetime | None = None) -> str | None:
    """The expert of the most recently remembered unexpired key among `keys`, or None."""
    checked = _check_keys(keys)
    if not checked:
        return None
    stmt = (
        select(SessionAffinity.expert)
        .where(SessionAffinity.key.in_(checked), SessionAffinity.expires_at > (now or utcnow()))
        .order_by(SessionAffinity.updated_at.desc(), SessionAffinity.key)
        .limit(1)
    )
    return session.execute(stmt).scalar_one_or_none()


def purge_expired_affinity(session: Session, *, now: datetime | None = None) -> int:
    """Delete every key past its expiry; returns how many."""
    stmt = delete(SessionAffinity).where(SessionAffinity.expires_at <= (now or utcnow()))
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
