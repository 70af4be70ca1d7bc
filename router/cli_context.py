"""What a `coe` command reads from its Typer context, typed without importing deploy/.

deploy/ops/cli.py is the one place that assembles the CLI: it puts an object with a `settings` attribute
(deploy/settings.py::Settings) in the root context. Commands in registry/ and eval/ read it through
`command_settings(ctx)`, typed by the Protocol below, so no package below deploy/ imports deploy/."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from router.errors import CoeError


class CommandSettings(Protocol):
    """The settings a registry or eval command may read; deploy's Settings has these and more."""

    database_url: str
    router_artifact: Path
    data_dir: Path


def command_settings(ctx: Any) -> CommandSettings:
    """The settings in the root context `coe` built; a command run outside `coe` is a programming error."""
    obj = ctx.find_root().obj
    settings = getattr(obj, "settings", None)
    if settings is None:
        raise CoeError("this command runs under `coe` (deploy/ops/cli.py), which provides its settings")
    return settings
