"""Alembic environment: always run with a connection handed over by registry.db (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    raise RuntimeError("run migrations through `coe db upgrade` (registry.db), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # ALTER on SQLite goes through batch copies
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
