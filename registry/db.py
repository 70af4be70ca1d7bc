"""Engines and schema for the registry: `make_engine(url)` builds an engine (SQLite or PostgreSQL),
applies the packaged Alembic migrations on first use, and maps connection failures to
`RegistryUnavailable`. Migrations are configured in code; users never need an alembic.ini.

Writers are serialised so that no update is lost: on SQLite a write transaction starts with
`BEGIN IMMEDIATE` (plus a busy timeout and WAL), on PostgreSQL every change first updates the single
`registry_revision` row, which holds a row lock until commit."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from router.errors import BadRequest, CoeError, RegistryUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: the newest migration shipped with this code (a test checks it against the migration scripts)
HEAD_REVISION = "0004"
#: execution option that makes a SQLite transaction start with BEGIN IMMEDIATE
WRITE_OPTION = "coe_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000

_schema_ready: weakref.WeakSet[Engine] = weakref.WeakSet()


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid database URL>"


def make_engine(url: str, *, migrate: bool = True, echo: bool = False) -> Engine:
    """An engine for `url`; with `migrate` the schema is brought to the newest migration now."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise BadRequest(f"invalid database URL {url!r}: {exc}") from None
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 5}
        kwargs["pool_size"] = 5
    else:
        raise BadRequest(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql+psycopg://…")
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise BadRequest(f"cannot use database URL {safe_url(url)}: {exc}") from None
    if backend == "sqlite":
        _install_sqlite_hooks(engine)
    if migrate:
        ensure_schema(engine)
    return engine


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver so that we can emit BEGIN IMMEDIATE for writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if engine.url.database not in (None, "", ":memory:"):
                _wal(cursor)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _wal(cursor: Any) -> None:
    """Put the file in WAL mode (readers never block the writer). The switch needs the file to itself,
    and SQLite refuses it at once ("database is locked"), busy timeout or not, while another connection
    holds a lock: on a fresh file that several processes or threads open together. Try again until one
    of them has switched it, for as long as the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return  # another connection switched it
        time.sleep(0.02)


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the write lock up front."""
    return engine.execution_options(**{WRITE_OPTION: True})


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver failures into typed errors: connection problems -> RegistryUnavailable."""
    try:
        yield
    except CoeError:
        raise
    except DBAPIError as exc:
        if exc.connection_invalidated or _is_connection_error(exc):
            raise RegistryUnavailable(
                f"registry database {safe_url(url)} is unreachable: {_first_line(exc.orig)}"
            ) from None
        raise RegistryUnavailable(
            f"registry database {safe_url(url)} failed: {_first_line(exc.orig)}"
        ) from None
    except SQLAlchemyError as exc:
        raise RegistryUnavailable(f"registry database {safe_url(url)} failed: {_first_line(exc)}") from None


def _first_line(exc: BaseException | None) -> str:
    lines = str(exc).strip().splitlines() if exc is not None else []
    return lines[0] if lines else type(exc).__name__


def _is_connection_error(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__ if exc.orig is not None else ""
    msg = str(exc.orig).lower()
    return name in {"OperationalError", "InterfaceError"} and (
        "connect" in msg or "unable to open" in msg or "server closed" in msg or "timeout" in msg
    )


# --- migrations -------------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic Config pointing at the packaged migrations (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _stored_revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: empty database)."""
    with translate_errors(str(engine.url)), engine.connect() as conn:
        return _stored_revision(conn)


def ensure_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration if it is not there yet (cheap when it is)."""
    if engine in _schema_ready:
        return
    url = engine.url.render_as_string(hide_password=False)
    with translate_errors(url):
        with engine.connect() as conn:
            current = _stored_revision(conn)
        if current != HEAD_REVISION:
            _known_or_fail(current, url)
            _run(engine, "upgrade", "head")
    _schema_ready.add(engine)


def _known_or_fail(revision: str | None, url: str) -> None:
    if revision is None:
        return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {s.revision for s in script.walk_revisions()}
    if revision not in known:
        raise RegistryUnavailable(
            f"registry database {safe_url(url)} has schema revision {revision!r}, unknown to this "
            "version of CoE Router (is the code older than the database?)"
        )


def _run(engine: Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    with writer(engine).begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting on an empty database: the second waits, then finds it migrated.
            conn.execute(text("SELECT pg_advisory_xact_lock(7352001)"))
        try:
            getattr(command, action)(alembic_config(conn), revision)
        except CommandError as exc:
            raise BadRequest(f"cannot {action} the registry schema to {revision!r}: {exc}") from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    with translate_errors(str(engine.url)):
        _run(engine, "upgrade", revision)
    _schema_ready.discard(engine)


def downgrade(engine: Engine, revision: str) -> None:
    with translate_errors(str(engine.url)):
        _run(engine, "downgrade", revision)
    _schema_ready.discard(engine)


def check_revision_arg(revision: str) -> None:
    """Fail clearly on a revision Alembic does not know (instead of its own traceback)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(alembic_config())
    if revision in {"head", "base", "heads"} or revision.startswith(("+", "-")):
        return
    try:
        script.get_revision(revision)
    except CommandError as exc:
        raise BadRequest(f"unknown schema revision {revision!r}: {exc}") from None
