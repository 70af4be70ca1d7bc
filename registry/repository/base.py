"""What every repository module shares: the revision row (the writers' lock), the flush that turns a
constraint violation into Conflict, the UNSET marker of partial updates and UTC timestamps."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.models import Category, CategoryExpert, Expert, RegistryRevision, SkillScore, utcnow
from router.errors import Conflict, RegistryUnavailable


class Unset(enum.Enum):
    """The type of UNSET: "leave this field as it is" in an update (None may be a value)."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


def aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:  # SQLite keeps no zone; we always store UTC
        return ts.replace(tzinfo=UTC)
    return ts


def current_revision(session: Session) -> int:
    """The registry revision: one primary-key lookup."""
    rev = session.execute(select(RegistryRevision.revision).where(RegistryRevision.id == 1)).scalar()
    if rev is None:
        raise RegistryUnavailable("registry schema is incomplete: the revision row is missing")
    return int(rev)


def lock_for_write(session: Session) -> None:
    """Take the writers' lock now (PostgreSQL: row lock on the revision row, held until commit), so that
    reads that come before the first change of a transaction already see the latest committed state."""
    session.execute(
        select(RegistryRevision.revision).where(RegistryRevision.id == 1).with_for_update()
    ).scalar()


def bump(session: Session) -> int:
    """Bump the revision first thing in a change: it takes the writers' lock until commit."""
    table: Any = RegistryRevision.__table__
    rev = session.execute(
        update(table)
        .where(table.c.id == 1)
        .values(revision=table.c.revision + 1, updated_at=utcnow())
        .returning(table.c.revision)
    ).scalar()
    if rev is None:
        raise RegistryUnavailable("registry schema is incomplete: the revision row is missing")
    return int(rev)


def flush(session: Session, what: str) -> None:
    """Flush, with a unique or foreign-key violation as Conflict naming `what`."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"{what} conflicts with an existing entry: {str(exc.orig).splitlines()[0]}") from None


def delete_with_links(session: Session, row: Expert | Category) -> None:
    """Delete an expert's or a category's row with its category-expert mappings and skill scores."""
    column = "expert_id" if isinstance(row, Expert) else "category_id"
    for link in (CategoryExpert, SkillScore):
        session.execute(delete(link).where(getattr(link, column) == row.id))
    session.delete(row)
