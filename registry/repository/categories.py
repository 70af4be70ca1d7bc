"""Categories and their ranked experts (the Composition-of-Experts map)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Category, CategoryExpert, Expert, utcnow
from registry.records import CategoryRecord
from registry.repository.base import aware, bump, delete_with_links, flush
from registry.repository.experts import get_expert_row
from registry.validation import check_category_name, check_pos_int, check_text
from router.errors import Conflict, NotFound


def get_category_row(session: Session, name: str) -> Category:
    row = session.execute(select(Category).where(Category.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"unknown category {name!r}", param="category")
    return row


def _category_experts(session: Session) -> dict[int, list[tuple[str, int]]]:
    rows = session.execute(
        select(CategoryExpert.category_id, Expert.name, CategoryExpert.rank)
        .join(Expert, Expert.id == CategoryExpert.expert_id)
        .order_by(CategoryExpert.category_id, CategoryExpert.rank, Expert.name)
    )
    out: dict[int, list[tuple[str, int]]] = {}
    for cid, ename, rank in rows:
        out.setdefault(cid, []).append((ename, rank))
    return out


def add_category(session: Session, *, name: str, description: str = "") -> CategoryRecord:
    check_category_name(name)
    check_text(description, "description")
    bump(session)
    if session.execute(select(Category.id).where(Category.name == name)).first() is not None:
        raise Conflict(f"category {name!r} already exists", param="name")
    row = Category(name=name, description=description, created_at=utcnow())
    session.add(row)
    flush(session, f"category {name!r}")
    return CategoryRecord(name=name, description=description, created_at=aware(row.created_at))


def update_category(session: Session, *, name: str, description: str) -> CategoryRecord:
    check_text(description, "description")
    bump(session)
    row = get_category_row(session, name)
    row.description = description
    session.flush()
    return get_category(session, name=name)


def remove_category(session: Session, *, name: str) -> None:
    """Remove a category with its expert mappings and skill scores."""
    bump(session)
    delete_with_links(session, get_category_row(session, name))
    session.flush()


def get_category(session: Session, *, name: str) -> CategoryRecord:
    row = get_category_row(session, name)
    experts = _category_experts(session).get(row.id, [])
    return CategoryRecord(
        name=row.name, description=row.description, experts=tuple(experts), created_at=aware(row.created_at)
    )


def list_categories(session: Session) -> list[CategoryRecord]:
    mapping = _category_experts(session)
    rows = session.execute(select(Category).order_by(Category.name)).scalars()
    return [
        CategoryRecord(
            name=c.name,
            description=c.description,
            experts=tuple(mapping.get(c.id, [])),
            created_at=aware(c.created_at),
        )
        for c in rows
    ]


def map_expert(session: Session, *, category: str, expert: str, rank: int = 1) -> CategoryRecord:
    """Map an expert to a category with a rank (1 = first choice); re-mapping changes the rank."""
    check_pos_int(rank, "rank")
    bump(session)
    cat = get_category_row(session, category)
    exp = get_expert_row(session, expert)
    link = session.get(CategoryExpert, (cat.id, exp.id))
    if link is None:
        session.add(CategoryExpert(category_id=cat.id, expert_id=exp.id, rank=rank))
    else:
        link.rank = rank
    flush(session, f"mapping {category!r} -> {expert!r}")
    return get_category(session, name=category)


def unmap_expert(session: Session, *, category: str, expert: str) -> CategoryRecord:
    bump(session)
    cat = get_category_row(session, category)
    exp = get_expert_row(session, expert)
    link = session.get(CategoryExpert, (cat.id, exp.id))
    if link is None:
        raise NotFound(f"expert {expert!r} is not mapped to category {category!r}")
    session.delete(link)
    session.flush()
    return get_category(session, name=category)
