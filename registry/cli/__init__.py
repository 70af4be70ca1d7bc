"""Admin CLI of the registry: `coe experts …`, `coe categories …`, `coe keys …`, `coe registry …`,
`coe db …`, `coe decisions …`. One Typer sub-app per noun, built by a `build_<noun>_app()` factory
(one module each); one transaction per command, `--json` on every listing. deploy/ops/cli.py, the one
assembler of `coe`, adds the apps of `build_registry_apps()` (and attaches commands of other packages,
such as `coe experts probe`, to them); the commands read the settings it puts in the Typer context
(router/cli_context.py). Import-light on purpose: SQLAlchemy, Alembic and YAML load inside the commands."""

from __future__ import annotations

import typer

from registry.cli.categories import build_categories_app
from registry.cli.decision_log import build_decisions_app, profile_from_feedback
from registry.cli.experts import build_experts_app
from registry.cli.keys import build_keys_app
from registry.cli.schema import build_db_app
from registry.cli.transfer import build_registry_app

__all__ = [
    "build_categories_app",
    "build_db_app",
    "build_decisions_app",
    "build_experts_app",
    "build_keys_app",
    "build_registry_app",
    "build_registry_apps",
    "profile_from_feedback",
]


def build_registry_apps() -> dict[str, typer.Typer]:
    """Fresh sub-apps of the registry by the name `coe` gives each, in the order of `coe --help`."""
    return {
        "experts": build_experts_app(),
        "categories": build_categories_app(),
        "keys": build_keys_app(),
        "registry": build_registry_app(),
        "db": build_db_app(),
        "decisions": build_decisions_app(),
    }
