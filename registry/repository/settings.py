"""Registry settings: named JSON values (the deployed router artifact, defaults of the service)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Setting, utcnow
from registry.repository.base import bump
from registry.validation import check_json, check_name


def get_setting(session: Session, *, key: str, default: Any = None) -> Any:
    row = session.get(Setting, key)
    return default if row is None else row.value


def set_setting(session: Session, *, key: str, value: Any) -> int:
    """Set a setting (any JSON value); returns the new revision, so a router hot-swap is one change."""
    check_name(key, "setting key")
    value = check_json(value, key)
    revision = bump(session)
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=value, updated_at=utcnow()))
    else:
        row.value, row.updated_at = value, utcnow()
    session.flush()
    return revision


def list_settings(session: Session) -> dict[str, Any]:
    return {s.key: s.value for s in session.execute(select(Setting).order_by(Setting.key)).scalars()}
