"""The routing core: embeddings, the learned skill classifier, routing policies and RouteDecision.

Pure: importing `router` pulls in no Ray, FastAPI, SQLAlchemy or torch (tests/router/test_purity.py)."""

from router.errors import CoeError, NoHealthyExpert, RoutingError
from router.types import (
    ExpertChoice,
    ExpertInfo,
    ExpertLoad,
    RegistrySnapshot,
    RouteDecision,
    RoutingOptions,
)

__all__ = [
    "CoeError",
    "ExpertChoice",
    "ExpertInfo",
    "ExpertLoad",
    "NoHealthyExpert",
    "RegistrySnapshot",
    "RouteDecision",
    "RoutingError",
    "RoutingOptions",
]
