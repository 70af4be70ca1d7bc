"""`coe db upgrade|downgrade|current`: migrations of the registry database schema; `coe db purge`: delete
the runtime rows past their expiry (stored responses, session-affinity keys)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from registry.cli.common import JsonOpt, database_url, done, emit_json, open_registry


def build_db_app() -> typer.Typer:
    app = typer.Typer(help="Registry database schema migrations.", no_args_is_help=True)
    app.command("upgrade")(db_upgrade)
    app.command("downgrade")(db_downgrade)
    app.command("current")(db_current)
    app.command("purge")(db_purge)
    return app


def _engine(ctx: typer.Context) -> Any:
    from registry.db import make_engine

    return make_engine(database_url(ctx), migrate=False)


def db_upgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
) -> None:
    """Migrate the registry schema up to REVISION (default: the newest)."""
    from registry import db

    db.check_revision_arg(revision)
    engine = _engine(ctx)
    try:
        db.upgrade(engine, revision)
        done(f"registry schema at {db.schema_revision(engine) or 'base'}")
    finally:
        engine.dispose()


def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops everything).")],
) -> None:
    """Migrate the registry schema down to REVISION."""
    from registry import db

    db.check_revision_arg(revision)
    engine = _engine(ctx)
    try:
        db.downgrade(engine, revision)
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
    if as_json:
        emit_json({"purged": purged})
    else:
        done(f"purged {purged} expired row(s)")
