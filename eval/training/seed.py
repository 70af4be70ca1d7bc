"""First-run seeding of the embedded default: the local SmolLM2 persona experts, mapped to the router
artifact's categories. Runs only on an empty registry (no experts, no categories), so a second
`coe up` keeps whatever the operator changed since.

It lives below deploy/ (which runs it from `coe up`, deploy/ops/local.py) because `coe eval sources` scores
routing against the same default category → persona map (`plan`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from router.errors import ArtifactError
from router.types import GENERALIST_TAG, ExpertInfo

if TYPE_CHECKING:
    from registry import Registry

#: categories that go to a persona other than the general one when the artifact has no exact match
_FALLBACK_PERSONA = "smollm2-general"
#: the traffic categories of the mixed-data router (eval/data/label_map.yaml) that no persona lists itself:
#: code requests to the programmer, puzzles and estimates to the step-by-step mathematician. Writing,
#: chat and extraction are absent on purpose: they go to the general persona (never a specialist).
TRAFFIC_PERSONAS: dict[str, str] = {"coding": "smollm2-code", "reasoning": "smollm2-math"}


@dataclass(frozen=True, slots=True)
class SeedPlan:
    experts: tuple[ExpertInfo, ...]
    mapping: tuple[tuple[str, tuple[str, ...]], ...]  # category -> experts, best rank first


def artifact_categories(artifact: Path) -> tuple[str, ...]:
    """The categories in an artifact's manifest (read without loading the model)."""
    path = Path(artifact) / "manifest.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        cats = tuple(str(c) for c in raw["categories"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"router artifact {artifact}: cannot read categories from manifest.json ({exc})"
        ) from None
    if not cats:
        raise ArtifactError(f"router artifact {artifact}: no categories")
    return cats


def plan(categories: Sequence[str], base_url: str) -> SeedPlan:
    """Which persona answers which category: the persona whose table lists the category first, the
    general persona for the rest; every category's second rank is the general persona."""
    from experts.local_model import PERSONAS, persona_expert_specs

    specs = persona_expert_specs(base_url)
    by_model = {e.model: e for e in specs}
    general = next((e.name for e in specs if GENERALIST_TAG in e.tags), by_model[_FALLBACK_PERSONA].name)
    owner: dict[str, str] = {}
    for persona in PERSONAS.values():
        for cat in persona.categories:
            owner.setdefault(cat.lower(), by_model[persona.name].name)
    for cat, model in TRAFFIC_PERSONAS.items():
        if model in by_model:
            owner.setdefault(cat, by_model[model].name)
    mapping = []
    for cat in categories:
        first = owner.get(cat.lower(), general)
        ranked = (first,) if first == general else (first, general)
        mapping.append((cat, ranked))
    return SeedPlan(tuple(specs), tuple(mapping))


def is_empty(registry: Registry) -> bool:
    snap = registry.snapshot()
    return not snap.experts and not snap.category_experts


def seed(registry: Registry, artifact: Path, base_url: str) -> SeedPlan | None:
    """Seed an empty registry in one transaction; None when it already holds experts or categories."""
    from registry import repository as repo

    if not is_empty(registry):
        return None
    p = plan(artifact_categories(artifact), base_url)
    with registry.session() as s:
        existing = {c.name for c in repo.list_categories(s)}
        for e in p.experts:
            repo.add_expert(
                s,
                name=e.name,
                base_url=e.base_url,
                model=e.model,
                max_context=e.max_context,
                max_concurrency=e.max_concurrency,
                timeout_s=e.timeout_s,
                tags=e.tags,
                notes=e.notes,
            )
        for cat, experts in p.mapping:
            if cat not in existing:
                repo.add_category(s, name=cat)
            for rank, name in enumerate(experts, start=1):
                repo.map_expert(s, category=cat, expert=name, rank=rank)
    return p


def point_local_experts(registry: Registry, base_url: str) -> int:
    """On a later run the local server may listen on another port: move the `local` experts there."""
    from registry import repository as repo

    moved = 0
    with registry.session() as s:
        for e in repo.list_experts(s):
            if "local" in e.tags and e.base_url.rstrip("/") != base_url.rstrip("/"):
                repo.update_expert(s, name=e.name, base_url=base_url)
                moved += 1
    return moved
