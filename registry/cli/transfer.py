"""`coe registry export|import`: the whole registry (not API keys) as one YAML file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from registry.cli.common import DryRun, JsonOpt, command_group, done, emit_json, open_registry, write_output
from router.errors import BadRequest, CoeError


def build_registry_app() -> typer.Typer:
    return command_group(
        "Export and import the whole registry as YAML.",
        {"export": registry_export, "import": registry_import},
    )


def _dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _load_yaml(file: Path) -> Any:
    import yaml

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadRequest(f"{file} is not valid YAML{where}: {problem}") from None


def registry_export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="YAML file to write ('-' for stdout).")],
) -> None:
    """Export experts, categories, skill scores and settings (not API keys) as YAML."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        data = repo.export_registry(s)
    if write_output(file, _dump_yaml(data)):
        done(f"exported {len(data['experts'])} experts, {len(data['categories'])} categories to {file}")


def registry_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="YAML file written by `coe registry export` ('-' for stdin).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and report; change nothing.")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Also remove what the file does not list.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a registry file in one transaction: all of it or nothing."""
    from registry import repository as repo

    data = _load_yaml(file)
    summary = None
    with open_registry(ctx) as reg:
        try:
            with reg.session() as s:
                try:
                    summary = repo.import_registry(s, data=data, replace=replace)
                except CoeError as exc:
                    raise type(exc)(f"{file}: {exc.message}") from None
                if dry_run:
                    raise DryRun
        except DryRun:
            pass
    assert summary is not None
    if as_json:
        emit_json(
            {
                "dry_run": dry_run,
                "added": summary.added,
                "updated": summary.updated,
                "removed": summary.removed,
                "revision": None if dry_run else summary.revision,
            }
        )
    else:
        done(("dry run, nothing changed: would have " if dry_run else "imported: ") + summary.describe())
