"""experts/: the pool's modules import one way (pool → dispatch → aggregate → failover → attempt → slot),
lazy imports included, so aggregation depends on the failover core and never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import experts

CHAIN = ["slot", "attempt", "failover", "aggregate", "dispatch", "pool"]
ROOT = Path(experts.__file__).parent


def _imported(module: str) -> set[str]:
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_pool_modules_import_one_way():
    for i, module in enumerate(CHAIN):
        above = {f"experts.{m}" for m in CHAIN[i + 1 :]}
        assert not _imported(module) & above, f"experts/{module}.py imports a module above it"


def test_attempt_record_and_unavailable_error():
    from experts.attempt import Attempt
    from router.errors import ExpertTimeout, ExpertUnavailable, NoHealthyExpert

    failed = Attempt.failed("a", ExpertTimeout("slow", expert="a", status_code=None))
    assert failed.as_dict() == {"expert": "a", "error": "ExpertTimeout", "message": "slow"}
    assert failed.error_class is ExpertTimeout
    assert Attempt.skipped("b", "circuit_open").as_dict() == {
        "expert": "b",
        "error": "circuit_open",
        "message": "circuit_open",
    }
    exc = ExpertUnavailable("expert 'b': circuit open", expert="b", reason="circuit_open")
    assert isinstance(exc, NoHealthyExpert) and exc.status == 503 and exc.attempts == ()
