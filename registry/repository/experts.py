"""Experts: register, change, enable or disable, remove, read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Expert, utcnow
from registry.records import ExpertRecord
from registry.repository.base import UNSET, aware, bump, delete_with_links, flush
from registry.spec import EXPERT_FIELDS, expert_spec, spec_of, spec_update
from router.errors import Conflict, NotFound

__all__ = ["EXPERT_FIELDS"]


def expert_record(e: Expert) -> ExpertRecord:
    return ExpertRecord(
        **{f: _frozen(getattr(e, f)) for f in ("name", *EXPERT_FIELDS)},
        created_at=aware(e.created_at),  # type: ignore[arg-type]
        updated_at=aware(e.updated_at),  # type: ignore[arg-type]
    )


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def get_expert_row(session: Session, name: str) -> Expert:
    row = session.execute(select(Expert).where(Expert.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"unknown expert {name!r}", param="expert")
    return row


def add_expert(session: Session, *, name: str, **fields: Any) -> ExpertRecord:
    """Register an expert: `fields` are registry.spec.ExpertSpec's (left out: its defaults)."""
    spec = expert_spec({"name": name, **fields})
    bump(session)
    if session.execute(select(Expert.id).where(Expert.name == name)).first() is not None:
        raise Conflict(f"expert {name!r} already exists", param="name")
    now = utcnow()
    row = Expert(created_at=now, updated_at=now, **spec.model_dump())
    session.add(row)
    flush(session, f"expert {name!r}")
    return expert_record(row)


def update_expert(session: Session, *, name: str, **changes: Any) -> ExpertRecord:
    """Change the given fields of an expert (ExpertSpec's updatable ones; UNSET leaves a field as it is)."""
    changes = {k: v for k, v in changes.items() if v is not UNSET}
    bump(session)
    row = get_expert_row(session, name)
    spec = spec_update(spec_of(row), changes)
    for key in changes:
        setattr(row, key, getattr(spec, key))
    row.updated_at = utcnow()
    flush(session, f"expert {name!r}")
    return expert_record(row)


def set_expert_enabled(session: Session, *, name: str, enabled: bool) -> ExpertRecord:
    return update_expert(session, name=name, enabled=enabled)


def remove_expert(session: Session, *, name: str) -> None:
    """Remove an expert with its category mappings and skill scores."""
    bump(session)
    delete_with_links(session, get_expert_row(session, name))
    session.flush()


def get_expert(session: Session, *, name: str) -> ExpertRecord:
    return expert_record(get_expert_row(session, name))


def list_experts(session: Session, *, enabled: bool | None = None) -> list[ExpertRecord]:
    stmt = select(Expert).order_by(Expert.name)
    if enabled is not None:
        stmt = stmt.where(Expert.enabled == enabled)
    return [expert_record(e) for e in session.execute(stmt).scalars()]
