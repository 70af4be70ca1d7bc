"""What every registry command shares: the registry named by the settings in the Typer context,
`--json`, JSON and table output, and the one-line confirmation on stderr."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.cli_context import command_settings

if TYPE_CHECKING:
    from registry.service import Registry

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


class DryRun(Exception):
    """Raised inside a transaction to roll it back after a --dry-run computed what it would do."""


def database_url(ctx: typer.Context) -> str:
    return str(command_settings(ctx).database_url)


def open_registry(ctx: typer.Context) -> Registry:
    from registry.service import Registry

    return Registry(database_url(ctx))


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def table(
    title: str, columns: list[str], rows: list[list[Any]], *, keys: int = 1, optional: tuple[str, ...] = ()
) -> None:
    from registry.console import print_table

    print_table(title, columns, rows, keys=keys, optional=optional)


def done(message: str) -> None:
    typer.echo(message, err=True)
