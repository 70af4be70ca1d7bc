"""Stored Responses API responses (`store: true`): kept for `previous_response_id`, GET and DELETE.

A response belongs to the key that created it (`key_id`, the owner's digest; None when the service runs
without API keys): another owner reads it as unknown. `ttl_s` is the retention: past `expires_at` a
response reads as unknown and `purge_expired_responses` deletes it; None keeps it until deleted.
Storing a response is runtime data, like the decision log: it does not bump the registry revision.

The history of a chain (`response_history`) is every response's input items then its output items,
oldest first, following `previous_response_id` back until the first response or the first link that
was deleted or expired (the turns before it are gone with it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Unpack

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import Session

from registry.models import RESPONSE_ID_LEN, StoredResponseRow, utcnow
from registry.records import ResponseToStore, StoredResponse
from registry.repository.base import aware, flush
from router.errors import BadRequest, NotFound

#: the longest chain `response_history` follows (a guard: ids are unique, so a chain has no cycle)
MAX_CHAIN = 10_000


def _check_id(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value or len(value) > RESPONSE_ID_LEN:
        raise BadRequest(f"invalid response id {value!r}: 1-{RESPONSE_ID_LEN} characters", param=param)
    return value


def _check_ttl(ttl_s: Any) -> float | None:
    if ttl_s is None:
        return None
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, int | float)
        or not math.isfinite(ttl_s)
        or ttl_s <= 0
    ):
        raise BadRequest(f"invalid retention {ttl_s!r}: seconds > 0, or None to keep", param="ttl_s")
    return float(ttl_s)


def _record(row: StoredResponseRow) -> StoredResponse:
    return StoredResponse(
        id=row.id,
        key_id=row.key_id,
        expert=row.expert,
        model=row.model,
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        expires_at=aware(row.expires_at),
        previous_response_id=row.previous_response_id,
        input_items=tuple(row.input_items or ()),
        response=dict(row.response or {}),
    )


def _visible(key_id: str | None, now: datetime) -> ColumnElement[bool]:
    """Rows of this owner that have not expired."""
    owner = StoredResponseRow.key_id.is_(None) if key_id is None else StoredResponseRow.key_id == key_id
    alive = or_(StoredResponseRow.expires_at.is_(None), StoredResponseRow.expires_at > now)
    return and_(owner, alive)


def put_response(
    session: Session, *, now: datetime | None = None, **new: Unpack[ResponseToStore]
) -> StoredResponse:
    """Store a response (an id already stored is a Conflict); `ttl_s` None keeps it until deleted."""
    id = _check_id(new["id"], "id")
    previous = new.get("previous_response_id")
    if previous is not None:
        _check_id(previous, "previous_response_id")
    ttl = _check_ttl(new.pop("ttl_s", None))
    if not isinstance(new["response"], dict):
        raise BadRequest("a stored response must be a JSON object", param="response")
    items = list(new["input_items"])
    if not all(isinstance(i, dict) for i in items):
        raise BadRequest("input items must be JSON objects", param="input_items")
    created = now or utcnow()
    row = StoredResponseRow(
        **{**new, "input_items": items, "previous_response_id": previous},
        created_at=created,
        expires_at=None if ttl is None else created + timedelta(seconds=ttl),
    )
    session.add(row)
    flush(session, f"response {id!r}")
    return _record(row)


def get_response(
    session: Session, *, id: str, key_id: str | None, now: datetime | None = None
) -> StoredResponse | None:
    """The owner's unexpired response `id`, or None (unknown, another owner's, expired)."""
    if not isinstance(id, str) or not id or len(id) > RESPONSE_ID_LEN:
        return None
    stmt = select(StoredResponseRow).where(StoredResponseRow.id == id, _visible(key_id, now or utcnow()))
    row = session.execute(stmt).scalar_one_or_none()
    return None if row is None else _record(row)


def delete_response(session: Session, *, id: str, key_id: str | None, now: datetime | None = None) -> bool:
    """Delete the owner's response `id`; False when there was none to delete (expired counts as none)."""
    if not isinstance(id, str) or not id or len(id) > RESPONSE_ID_LEN:
        return False
    stmt = delete(StoredResponseRow).where(StoredResponseRow.id == id, _visible(key_id, now or utcnow()))
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def response_history(
    session: Session, *, id: str, key_id: str | None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The chain ending at response `id` as Responses items (each response's input items, then its
    output items), oldest first. NotFound when `id` itself is unknown to this owner or expired."""
    now = now or utcnow()
    return chain_items(id, lambda current: get_response(session, id=current, key_id=key_id, now=now))


def chain_items(id: str, lookup: Callable[[str], StoredResponse | None]) -> list[dict[str, Any]]:
    """Walk `previous_response_id` back from `id` (at most MAX_CHAIN responses, a loop ends it) through
    `lookup` (None: unknown to this owner or expired) and return the chain's items, oldest first."""
    chain: list[StoredResponse] = []
    seen: set[str] = set()
    current: str | None = id
    while current is not None and current not in seen and len(chain) < MAX_CHAIN:
        record = lookup(current)
        if record is None:
            break
        chain.append(record)
        seen.add(current)
        current = record.previous_response_id
    if not chain:
        raise NotFound(
            f"Previous response with id {id!r} not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return [item for record in reversed(chain) for item in (*record.input_items, *record.output_items)]


def purge_expired_responses(session: Session, *, now: datetime | None = None) -> int:
    """Delete every response past its expiry; returns how many."""
    stmt = delete(StoredResponseRow).where(StoredResponseRow.expires_at <= (now or utcnow()))
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
