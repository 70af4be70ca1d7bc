"""The expert registry: SQLAlchemy models, Alembic migrations, repository functions, the admin CLI.

`registry.Registry(url)` is the facade (see registry/service.py); it is imported lazily so that
`import registry` (and `coe --help`) does not load SQLAlchemy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry.records import (
        ApiKeyRecord,
        CategoryRecord,
        ExpertRecord,
        SkillScoreRecord,
        StoredResponse,
    )
    from registry.service import Registry

__all__ = [
    "ApiKeyRecord",
    "CategoryRecord",
    "ExpertRecord",
    "Registry",
    "SkillScoreRecord",
    "StoredResponse",
]


def __getattr__(name: str) -> Any:
    if name == "Registry":
        from registry.service import Registry

        return Registry
    if name in {"ApiKeyRecord", "CategoryRecord", "ExpertRecord", "SkillScoreRecord", "StoredResponse"}:
        from registry import records

        return getattr(records, name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
