"""The pure half of `coe registry import`: a registry file's values, validated (`validate_document`), and
the changes that bring the registry from its current state to the file (`plan_import`). No database
here: registry/repository/transfer.py reads the state and applies the plan in one transaction.

Entries in the file replace the same-named entries (a category's expert list included); with `replace`,
entries the file does not list are removed as well. Removing an expert or a category takes its mappings
and skill scores with it; those are not counted again as removed mappings or skill scores."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from registry.records import ImportSummary
from registry.repository.skills import check_score
from registry.spec import expert_spec
from registry.validation import (
    check_category_name,
    check_json,
    check_name,
    check_pos_int,
    check_text,
)
from router.errors import BadRequest

K = TypeVar("K")
V = TypeVar("V")

Score = tuple[float, int, str]  # score, sample count, source
Pair = tuple[str, str]  # (expert, category) of a skill score, (category, expert) of a mapping


@dataclass(frozen=True, slots=True)
class ImportDocument:
    """A registry file with every value checked and normalised, in the file's order."""

    experts: Mapping[str, Mapping[str, Any]]  # name -> every expert field
    categories: Mapping[str, tuple[str, tuple[tuple[str, int], ...]]]  # name -> (description, links)
    skills: Mapping[Pair, Score]  # (expert, category) -> score
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RegistryState:
    """The registry as an import finds it (read under the writers' lock)."""

    experts: Mapping[str, Mapping[str, Any]]  # name -> every expert field as stored
    categories: Mapping[str, str]  # name -> description
    mappings: Mapping[str, Mapping[str, int]]  # category -> expert -> rank
    skills: Mapping[Pair, Score]  # (expert, category) -> score
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Changes(Generic[K, V]):
    """What changes in one kind of entry: new ones, changed ones (with their new value), removed keys."""

    add: Mapping[K, V]
    update: Mapping[K, V]
    remove: tuple[K, ...]


@dataclass(frozen=True, slots=True)
class ImportPlan:
    experts: Changes[str, Mapping[str, Any]]
    categories: Changes[str, str]  # -> description
    mappings: Changes[Pair, int]  # (category, expert) -> rank
    skills: Changes[Pair, Score]  # (expert, category) -> score
    settings: Changes[str, Any]

    def summary(self, revision: int) -> ImportSummary:
        kinds: dict[str, Changes[Any, Any]] = {
            "experts": self.experts,
            "categories": self.categories,
            "mappings": self.mappings,
            "skills": self.skills,
            "settings": self.settings,
        }
        return ImportSummary(
            added={k: len(c.add) for k, c in kinds.items()},
            updated={k: len(c.update) for k, c in kinds.items()},
            removed={k: len(c.remove) for k, c in kinds.items()},
            revision=revision,
        )


# --- the file's values --------------------------------------------------------------------------------


def validate_document(doc: Mapping[str, Any]) -> ImportDocument:
    """Check every value of a structurally valid file (transfer.parse_document) before any change."""
    return ImportDocument(
        experts=_experts(doc["experts"]),
        categories=_categories(doc["categories"]),
        skills=_skills(doc["skills"]),
        settings={check_name(k, "setting key"): check_json(v, k) for k, v in doc["settings"].items()},
    )


def _experts(items: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    experts: dict[str, Mapping[str, Any]] = {}
    for item in items:
        name = check_name(item["name"], "expert name")
        try:
            experts[name] = expert_spec(item).model_dump(exclude={"name"})
        except BadRequest as exc:
            raise BadRequest(f"expert {name!r}: {exc.message}") from None
    return experts


def _categories(items: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, tuple[tuple[str, int], ...]]]:
    categories = {}
    for item in items:
        name = check_category_name(item["name"])
        desc = check_text(item.get("description", "") or "", "description")
        links = tuple(
            (check_name(x["expert"], "expert name"), check_pos_int(x["rank"], "rank"))
            for x in item.get("experts") or []
        )
        categories[name] = (desc, links)
    return categories


def _skills(items: Iterable[Mapping[str, Any]]) -> dict[Pair, Score]:
    skills = {}
    for item in items:
        score = check_score(item["score"], item.get("n", 0), item.get("source", "") or "")
        skills[(check_name(item["expert"], "expert name"), check_category_name(item["category"]))] = score
    return skills


# --- the plan -----------------------------------------------------------------------------------------


def _diff(wanted: Mapping[K, V], current: Mapping[K, V], *, replace: bool) -> Changes[K, V]:
    """Entries of `wanted` that `current` lacks or holds otherwise; with `replace`, the rest goes."""
    return Changes(
        add={k: v for k, v in wanted.items() if k not in current},
        update={k: v for k, v in wanted.items() if k in current and current[k] != v},
        remove=tuple(k for k in current if k not in wanted) if replace else (),
    )


def plan_import(doc: ImportDocument, state: RegistryState, *, replace: bool) -> ImportPlan:
    """The changes from `state` to `doc`; BadRequest when the file maps or scores an expert or a
    category that will not exist."""
    experts = _diff(doc.experts, state.experts, replace=replace)
    categories = _diff({n: d for n, (d, _) in doc.categories.items()}, state.categories, replace=replace)
    gone_experts, gone_categories = set(experts.remove), set(categories.remove)
    known_experts = set(doc.experts) | (set() if replace else set(state.experts))
    known_categories = set(doc.categories) | (set() if replace else set(state.categories))
    wanted: dict[Pair, int] = {}
    current: dict[Pair, int] = {}
    for name, (_, links) in doc.categories.items():
        for expert, rank in links:
            if expert not in known_experts:
                raise BadRequest(f"category {name!r} maps unknown expert {expert!r}")
            wanted[(name, expert)] = rank
        current.update(
            ((name, e), r) for e, r in state.mappings.get(name, {}).items() if e not in gone_experts
        )
    for expert, category in doc.skills:
        if expert not in known_experts:
            raise BadRequest(f"skill score for unknown expert {expert!r}")
        if category not in known_categories:
            raise BadRequest(f"skill score for unknown category {category!r}")
    # what a removed expert or category takes with it is not removed (nor counted) again
    skills = {
        (e, c): s for (e, c), s in state.skills.items() if e not in gone_experts and c not in gone_categories
    }
    return ImportPlan(
        experts=experts,
        categories=categories,
        mappings=_diff(wanted, current, replace=True),  # a listed category's experts: exactly the file's
        skills=_diff(doc.skills, skills, replace=replace),
        settings=_diff(doc.settings, state.settings, replace=replace),
    )
