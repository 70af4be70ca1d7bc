"""`coe db upgrade|downgrade|current`: migrations of the registry database schema; `coe db purge`: delete
the runtime rows past their expiry (stored responses, session-affinity keys)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from registry.cli.common import JsonOpt, command_group, database_url, done, emit_json, open_registry, report


def build_db_app() -> typer.Typer:
    return command_group(
        "Registry database schema migrations.",
        {"upgrade": db_upgrade, "downgrade": db_downgrade, "current": db_current, "purge": db_purge},
    )


def _engine(ctx: typer.Context) -> Any:
    from registry.db import make_engine

    return make_engine(database_url(ctx), migrate=False)


def db_upgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
) -> None:
    """Migrate the registry schema up to REVISION (default: the newest)."""
    _migrate(ctx, revision, up=True)


def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops everything).")],
) -> None:
    """Migrate the registry schema down to REVISION."""
    _migrate(ctx, revision, up=False)


def _migrate(ctx: typer.Context, revision: str, *, up: bool) -> None:
    from registry import db

    db.check_revision_arg(revision)
    engine = _engine(ctx)
    try:
        (db.upgrade if up else db.downgrade)(engine, revision)
        done(f"registry schema at {db.schema_revision(engine) or 'base'}")
    finally:
        engine.dispose()


def db_current(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the schema revision of the registry database (and whether it is the newest)."""
    from registry import db

    engine = _engine(ctx)
    try:
        current = db.schema_revision(engine)
    finally:
        engine.dispose()
    data = {
        "database": db.safe_url(database_url(ctx)),
        "revision": current,
        "head": db.HEAD_REVISION,
        "up_to_date": current == db.HEAD_REVISION,
    }
    if as_json:
        emit_json(data)
    else:
        suffix = " (head)" if data["up_to_date"] else f" (head is {db.HEAD_REVISION})"
        typer.echo(f"{current or 'base (empty)'}{suffix}")


def db_purge(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Delete expired stored responses and session-affinity keys (the service also purges them now and
    then; a cron job may too)."""
    with open_registry(ctx) as reg:
        purged = reg.purge_expired()
    report(as_json, {"purged": purged}, f"purged {purged} expired row(s)")
