"""Moved to eval/seed.py (below deploy/, since `coe eval sources` uses the same map); re-exported here."""

from eval.seed import (
    TRAFFIC_PERSONAS,
    SeedPlan,
    artifact_categories,
    is_empty,
    plan,
    point_local_experts,
    seed,
)

__all__ = [
    "TRAFFIC_PERSONAS",
    "SeedPlan",
    "artifact_categories",
    "is_empty",
    "plan",
    "point_local_experts",
    "seed",
]
