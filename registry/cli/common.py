"""What every registry command shares: the registry named by the settings in the Typer context,
`--json`, JSON and table output, and the one-line confirmation on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.cli_context import command_settings
from router.errors import BadRequest

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


def command_group(help: str, commands: Mapping[str, Callable[..., Any]]) -> typer.Typer:
    """A `coe <noun>` sub-app: its help and its commands by name."""
    app = typer.Typer(help=help, no_args_is_help=True)
    for name, command in commands.items():
        app.command(name)(command)
    return app


def report(as_json: bool, data: Any, message: str) -> None:
    """`data` as JSON on stdout with --json, else the one-line confirmation on stderr."""
    if as_json:
        emit_json(data)
    else:
        done(message)


def listing(
    as_json: bool, data: Any, title: str, columns: list[str], rows: list[list[Any]], **kw: Any
) -> None:
    """`data` as JSON on stdout with --json, else a table of `rows` (`table`'s keywords in `kw`)."""
    if as_json:
        emit_json(data)
    else:
        table(title, columns, rows, **kw)


def write_output(file: Path, text: str) -> bool:
    """Write `text` to `file`, or to stdout for '-'; True when a file was written (then say so)."""
    if str(file) == "-":
        sys.stdout.write(text)
        return False
    try:
        file.write_text(text)
    except OSError as exc:
        raise BadRequest(f"cannot write {file}: {exc.strerror or exc}") from None
    return True
