"""One home for the facts several packages state: an expert's defaults, the routing policy names,
the aggregation modes, the quality-head methods and where the bundled router artifact lives.
Every other package imports these; none writes them again (tests/router/test_defaults.py)."""

from __future__ import annotations

from pathlib import Path

#: an expert registered without these gets them (registry, CLI, admin API, ExpertInfo)
EXPERT_MAX_CONTEXT = 4096
EXPERT_MAX_CONCURRENCY = 16
EXPERT_TIMEOUT_S = 60.0

#: routing policies (router/policies.py::POLICIES keys, in the order the docs list them)
POLICY_NAMES: tuple[str, ...] = ("category", "top_k", "top_p", "cost_aware", "quality")
DEFAULT_POLICY = "category"

#: the category policy's fallback threshold when neither the request, the settings nor the router
#: artifact (manifest `routing.threshold`, chosen by `coe router train`) sets one
DEFAULT_THRESHOLD = 0.35
#: categories of requests that name no subject ("how do I fix it?", "what does this do?"): a prompt whose
#: instruction is read as one of them, with code, a trace or a log pasted into it, is about what it pasted,
#: so the router reads the pasted material too (router/core.py `Router.probabilities`, docs/router.md)
TOPICLESS_CATEGORIES: frozenset[str] = frozenset({"chat"})

#: how several experts' answers become one (experts/aggregate.py)
AGGREGATION_MODES: tuple[str, ...] = ("synthesize", "vote", "best")

#: quality-head scorers (router/quality.py); "ensemble" averages the other two
QUALITY_HEADS: tuple[str, ...] = ("knn", "logreg", "ensemble")

#: the small router artifact bundled in the repository (rebuilt by `make router-artifact`)
DEFAULT_ROUTER_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "default"
