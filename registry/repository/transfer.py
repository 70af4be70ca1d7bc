"""The registry as a file: `export_registry` writes the YAML document of `coe registry export`,
`import_registry` applies one in the caller's transaction: checked whole (registry/repository/
import_plan.py) before the first change, then applied noun by noun, with one revision bump."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from registry.models import Category, CategoryExpert, Expert, Setting, SkillScore, utcnow
from registry.records import ImportSummary
from registry.repository.base import bump, delete_with_links, flush
from registry.repository.categories import list_categories
from registry.repository.experts import list_experts
from registry.repository.import_plan import (
    Changes,
    ImportPlan,
    RegistryState,
    plan_import,
    validate_document,
)
from registry.repository.settings import list_settings
from registry.repository.skills import list_skill_scores
from registry.spec import EXPERT_FIELDS, REQUIRED, SPEC_FIELDS, spec_values
from router.errors import BadRequest, NotFound

EXPORT_VERSION = 1


def export_registry(session: Session) -> dict[str, Any]:
    """The registry as a plain dict (no timestamps, no revision, no API keys): the YAML file format."""
    experts = []
    for e in list_experts(session):
        experts.append(spec_values(e))
    categories = [
        {
            "name": c.name,
            "description": c.description,
            "experts": [{"expert": n, "rank": r} for n, r in c.experts],
        }
        for c in list_categories(session)
    ]
    skills = [
        {"expert": s.expert, "category": s.category, "score": s.score, "n": s.n, "source": s.source}
        for s in list_skill_scores(session)
    ]
    return {
        "version": EXPORT_VERSION,
        "experts": experts,
        "categories": categories,
        "skills": skills,
        "settings": list_settings(session),
    }


def parse_document(data: Any) -> dict[str, Any]:
    """Structural validation of an import document; value checks happen in the repository checks."""
    if not isinstance(data, dict):
        raise BadRequest("registry file must hold a mapping with experts, categories, skills, settings")
    unknown = set(data) - {"version", "experts", "categories", "skills", "settings"}
    if unknown:
        raise BadRequest(f"registry file: unknown top-level key {sorted(unknown)[0]!r}")
    if data.get("version", EXPORT_VERSION) != EXPORT_VERSION:
        raise BadRequest(
            f"registry file: unsupported version {data.get('version')!r} (expected {EXPORT_VERSION})"
        )
    out: dict[str, Any] = {}
    for key, kind in (("experts", list), ("categories", list), ("skills", list), ("settings", dict)):
        value = data.get(key)
        if value is None:
            value = kind()
        if not isinstance(value, kind):
            raise BadRequest(f"registry file: {key} must be a {'list' if kind is list else 'mapping'}")
        out[key] = value
    allowed = {
        "experts": (set(REQUIRED), set(SPEC_FIELDS)),
        "categories": ({"name"}, {"name", "description", "experts"}),
        "skills": ({"expert", "category", "score"}, {"expert", "category", "score", "n", "source"}),
    }
    for key, (required, known) in allowed.items():
        seen: set[Any] = set()
        for i, item in enumerate(out[key]):
            where = f"registry file: {key}[{i}]"
            if not isinstance(item, dict):
                raise BadRequest(f"{where} must be a mapping")
            missing = required - set(item)
            if missing:
                raise BadRequest(f"{where}: missing {sorted(missing)[0]!r}")
            extra = set(item) - known
            if extra:
                raise BadRequest(f"{where}: unknown field {sorted(extra)[0]!r}")
            ident = item["name"] if key != "skills" else (item["expert"], item["category"])
            if ident in seen:
                raise BadRequest(f"{where}: duplicate {ident!r}")
            seen.add(ident)
    for i, cat in enumerate(out["categories"]):
        links = cat.get("experts") or []
        if not isinstance(links, list) or not all(
            isinstance(x, dict) and set(x) == {"expert", "rank"} for x in links
        ):
            raise BadRequest(f"registry file: categories[{i}].experts must be a list of {{expert, rank}}")
    return out


def import_registry(session: Session, *, data: Any, replace: bool = False) -> ImportSummary:
    """Apply an exported document in the caller's transaction (one revision bump). Entries in the file
    replace the same-named entries (a category's expert list included); with `replace`, entries that are
    not in the file are removed as well. API keys are never touched."""
    doc = parse_document(data)
    try:
        checked = validate_document(doc)
        revision = bump(session)  # the writers' lock: the state read next stays current until commit
        plan = plan_import(checked, read_state(session), replace=replace)
    except BadRequest as exc:
        raise BadRequest(f"registry file: {exc.message}", param=exc.param) from None
    except NotFound as exc:
        raise BadRequest(f"registry file: {exc.message}", param=exc.param) from None
    apply_plan(session, plan)
    return plan.summary(revision)


def read_state(session: Session) -> RegistryState:
    """What an import compares the file with: every expert, category, mapping, skill score and setting."""
    experts = {e.name: e for e in session.execute(select(Expert)).scalars()}
    categories = {c.name: c for c in session.execute(select(Category)).scalars()}
    expert_names = {e.id: n for n, e in experts.items()}
    category_names = {c.id: n for n, c in categories.items()}
    mappings: dict[str, dict[str, int]] = {}
    for link in session.execute(select(CategoryExpert)).scalars():
        mappings.setdefault(category_names[link.category_id], {})[expert_names[link.expert_id]] = link.rank
    return RegistryState(
        experts={n: spec_values(e, EXPERT_FIELDS) for n, e in experts.items()},
        categories={n: c.description for n, c in categories.items()},
        mappings=mappings,
        skills={
            (expert_names[s.expert_id], category_names[s.category_id]): (s.score, s.n, s.source)
            for s in session.execute(select(SkillScore)).scalars()
        },
        settings={s.key: s.value for s in session.execute(select(Setting)).scalars()},
    )


def apply_plan(session: Session, plan: ImportPlan) -> None:
    """Carry out a plan (after `bump`, in the same transaction); one timestamp for every change."""
    now = utcnow()
    expert_ids = _apply_experts(session, plan, now)
    category_ids = _apply_categories(session, plan, now)
    _apply_mappings(session, plan, expert_ids, category_ids)
    _apply_skills(session, plan, expert_ids, category_ids, now)
    _apply_settings(session, plan, now)
    flush(session, "import")


def _apply_experts(session: Session, plan: ImportPlan, now: datetime) -> dict[str, int]:
    return _apply_named(session, Expert, plan.experts, now)


def _apply_categories(session: Session, plan: ImportPlan, now: datetime) -> dict[str, int]:
    c = plan.categories
    described = (
        {n: {"description": d} for n, d in c.add.items()},
        {n: {"description": d} for n, d in c.update.items()},
    )
    return _apply_named(session, Category, Changes(*described, c.remove), now)


def _apply_named(
    session: Session, model: type[Expert | Category], changes: Changes[str, Mapping[str, Any]], now: datetime
) -> dict[str, int]:
    """Remove, add and change experts or categories by name (`changes`: name -> column values); returns
    every name's id."""
    found = cast("list[Expert | Category]", session.scalars(select(model)).all())
    rows = {r.name: r for r in found}
    for name in changes.remove:
        delete_with_links(session, rows[name])
    stamped = {"updated_at": now} if hasattr(model, "updated_at") else {}
    for name, fields in changes.add.items():
        session.add(model(name=name, created_at=now, **stamped, **fields))
    for name, fields in changes.update.items():
        for key, value in {**fields, **stamped}.items():
            setattr(rows[name], key, value)
    session.flush()
    return dict(session.execute(select(model.name, model.id)).tuples().all())


def _apply_mappings(
    session: Session, plan: ImportPlan, expert_ids: dict[str, int], category_ids: dict[str, int]
) -> None:
    changes = plan.mappings
    for category, expert in changes.remove:
        session.execute(
            delete(CategoryExpert).where(
                CategoryExpert.category_id == category_ids[category],
                CategoryExpert.expert_id == expert_ids[expert],
            )
        )
    for (category, expert), rank in changes.add.items():
        session.add(
            CategoryExpert(category_id=category_ids[category], expert_id=expert_ids[expert], rank=rank)
        )
    for (category, expert), rank in changes.update.items():
        session.execute(
            update(CategoryExpert)
            .where(
                CategoryExpert.category_id == category_ids[category],
                CategoryExpert.expert_id == expert_ids[expert],
            )
            .values(rank=rank)
        )
    session.flush()


def _apply_skills(
    session: Session,
    plan: ImportPlan,
    expert_ids: dict[str, int],
    category_ids: dict[str, int],
    now: datetime,
) -> None:
    changes = plan.skills
    for (expert, category), (score, n, source) in changes.add.items():
        session.add(
            SkillScore(
                expert_id=expert_ids[expert],
                category_id=category_ids[category],
                score=score,
                n=n,
                source=source,
                updated_at=now,
            )
        )
    for (expert, category), (score, n, source) in changes.update.items():
        row = session.get(SkillScore, (expert_ids[expert], category_ids[category]))
        assert row is not None  # the plan read it under the same lock
        row.score, row.n, row.source, row.updated_at = score, n, source, now
    for expert, category in changes.remove:
        row = session.get(SkillScore, (expert_ids[expert], category_ids[category]))
        if row is not None:
            session.delete(row)


def _apply_settings(session: Session, plan: ImportPlan, now: datetime) -> None:
    changes = plan.settings
    for key, value in changes.add.items():
        session.add(Setting(key=key, value=value, updated_at=now))
    for key, value in changes.update.items():
        row = session.get(Setting, key)
        assert row is not None  # the plan read it under the same lock
        row.value, row.updated_at = value, now
    for key in changes.remove:
        row = session.get(Setting, key)
        if row is not None:
            session.delete(row)
