"""Experts: register, change, enable or disable, remove, read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from registry.models import CategoryExpert, Expert, SkillScore, utcnow
from registry.records import ExpertRecord
from registry.repository.base import UNSET, Unset, aware, bump, flush
from registry.repository.validation import (
    check_capabilities,
    check_cost,
    check_env,
    check_name,
    check_pos_float,
    check_pos_int,
    check_tags,
    check_text,
    check_url,
)
from router.defaults import EXPERT_MAX_CONCURRENCY, EXPERT_MAX_CONTEXT, EXPERT_TIMEOUT_S
from router.errors import Conflict, NotFound

#: an expert's fields besides its name, in the order of the export file
EXPERT_FIELDS = (
    "base_url",
    "model",
    "api_key_env",
    "cost_input_per_m",
    "cost_output_per_m",
    "max_context",
    "max_concurrency",
    "timeout_s",
    "enabled",
    "tags",
    "notes",
    "capabilities",
)


def expert_record(e: Expert) -> ExpertRecord:
    return ExpertRecord(
        name=e.name,
        base_url=e.base_url,
        model=e.model,
        api_key_env=e.api_key_env,
        cost_input_per_m=e.cost_input_per_m,
        cost_output_per_m=e.cost_output_per_m,
        max_context=e.max_context,
        max_concurrency=e.max_concurrency,
        timeout_s=e.timeout_s,
        enabled=e.enabled,
        tags=tuple(e.tags or ()),
        notes=e.notes or "",
        capabilities=tuple(e.capabilities or ()),
        created_at=aware(e.created_at),  # type: ignore[arg-type]
        updated_at=aware(e.updated_at),  # type: ignore[arg-type]
    )


def get_expert_row(session: Session, name: str) -> Expert:
    row = session.execute(select(Expert).where(Expert.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"unknown expert {name!r}", param="expert")
    return row


def expert_fields(**kw: Any) -> dict[str, Any]:
    """Validate the expert fields that are set (not UNSET)."""
    checks = {
        "base_url": check_url,
        "model": lambda v: check_text(v, "model", empty=False),
        "api_key_env": check_env,
        "cost_input_per_m": lambda v: check_cost(v, "cost_input_per_m"),
        "cost_output_per_m": lambda v: check_cost(v, "cost_output_per_m"),
        "max_context": lambda v: check_pos_int(v, "max_context"),
        "max_concurrency": lambda v: check_pos_int(v, "max_concurrency"),
        "timeout_s": lambda v: check_pos_float(v, "timeout_s"),
        "enabled": lambda v: bool(v),
        "tags": lambda v: list(check_tags(v)),
        "notes": lambda v: check_text(v, "notes"),
        "capabilities": lambda v: list(check_capabilities(v)),
    }
    return {k: checks[k](v) for k, v in kw.items() if v is not UNSET}


def add_expert(
    session: Session,
    *,
    name: str,
    base_url: str,
    model: str,
    api_key_env: str | None = None,
    cost_input_per_m: float = 0.0,
    cost_output_per_m: float = 0.0,
    max_context: int = EXPERT_MAX_CONTEXT,
    max_concurrency: int = EXPERT_MAX_CONCURRENCY,
    timeout_s: float = EXPERT_TIMEOUT_S,
    enabled: bool = True,
    tags: Sequence[str] = (),
    notes: str = "",
    capabilities: Sequence[str] = (),
) -> ExpertRecord:
    check_name(name, "expert name")
    fields = expert_fields(
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        cost_input_per_m=cost_input_per_m,
        cost_output_per_m=cost_output_per_m,
        max_context=max_context,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
        enabled=enabled,
        tags=tags,
        notes=notes,
        capabilities=capabilities,
    )
    bump(session)
    if session.execute(select(Expert.id).where(Expert.name == name)).first() is not None:
        raise Conflict(f"expert {name!r} already exists", param="name")
    now = utcnow()
    row = Expert(name=name, created_at=now, updated_at=now, **fields)
    session.add(row)
    flush(session, f"expert {name!r}")
    return expert_record(row)


def update_expert(
    session: Session,
    *,
    name: str,
    base_url: str | Unset = UNSET,
    model: str | Unset = UNSET,
    api_key_env: str | None | Unset = UNSET,
    cost_input_per_m: float | Unset = UNSET,
    cost_output_per_m: float | Unset = UNSET,
    max_context: int | Unset = UNSET,
    max_concurrency: int | Unset = UNSET,
    timeout_s: float | Unset = UNSET,
    enabled: bool | Unset = UNSET,
    tags: Sequence[str] | Unset = UNSET,
    notes: str | Unset = UNSET,
    capabilities: Sequence[str] | Unset = UNSET,
) -> ExpertRecord:
    """Change the given fields of an expert (UNSET leaves a field as it is)."""
    fields = expert_fields(
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        cost_input_per_m=cost_input_per_m,
        cost_output_per_m=cost_output_per_m,
        max_context=max_context,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
        enabled=enabled,
        tags=tags,
        notes=notes,
        capabilities=capabilities,
    )
    bump(session)
    row = get_expert_row(session, name)
    for key, value in fields.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    flush(session, f"expert {name!r}")
    return expert_record(row)


def set_expert_enabled(session: Session, *, name: str, enabled: bool) -> ExpertRecord:
    return update_expert(session, name=name, enabled=enabled)


def delete_expert_row(session: Session, row: Expert) -> None:
    """Delete an expert's row with its category mappings and skill scores."""
    session.execute(delete(CategoryExpert).where(CategoryExpert.expert_id == row.id))
    session.execute(delete(SkillScore).where(SkillScore.expert_id == row.id))
    session.delete(row)


def remove_expert(session: Session, *, name: str) -> None:
    """Remove an expert with its category mappings and skill scores."""
    bump(session)
    delete_expert_row(session, get_expert_row(session, name))
    session.flush()


def get_expert(session: Session, *, name: str) -> ExpertRecord:
    return expert_record(get_expert_row(session, name))


def list_experts(session: Session, *, enabled: bool | None = None) -> list[ExpertRecord]:
    stmt = select(Expert).order_by(Expert.name)
    if enabled is not None:
        stmt = stmt.where(Expert.enabled == enabled)
    return [expert_record(e) for e in session.execute(stmt).scalars()]
