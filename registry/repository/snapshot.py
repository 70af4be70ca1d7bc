"""The registry as the router reads it: one immutable RegistrySnapshot at one revision."""

from __future__ import annotations

from sqlalchemy.orm import Session

from registry.repository.base import current_revision
from registry.repository.categories import list_categories
from registry.repository.experts import list_experts
from registry.repository.skills import list_skill_scores
from router.types import RegistrySnapshot


def load_snapshot(session: Session) -> RegistrySnapshot:
    """The registry at its current revision. `experts` holds every expert (with `.enabled`);
    `category_experts` and `skills` leave disabled experts out, so policies never pick them."""
    revision = current_revision(session)  # first: a concurrent change then shows up as a newer revision
    experts = {e.name: e.to_info() for e in list_experts(session)}
    category_experts = {
        c.name: tuple(n for n, _ in c.experts if experts[n].enabled) for c in list_categories(session)
    }
    skills: dict[str, dict[str, float]] = {}
    for s in list_skill_scores(session):
        if experts[s.expert].enabled:
            skills.setdefault(s.expert, {})[s.category] = s.score
    return RegistrySnapshot(
        revision=revision, experts=experts, category_experts=category_experts, skills=skills
    )
