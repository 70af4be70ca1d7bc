"""Alembic migrations: upgrade from empty, downgrade to base, upgrade again; models match migrations."""

from __future__ import annotations

from sqlalchemy import inspect

from registry import db
from registry.models import Base

TABLES = {"expert", "category", "category_expert", "skill_score", "api_key", "setting", "registry_revision"}


def _tables(engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_head_constant_matches_the_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(db.alembic_config()).get_current_head() == db.HEAD_REVISION


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = db.make_engine(db_url, migrate=False)
    try:
        assert db.schema_revision(engine) is None and not (_tables(engine) & TABLES)
        db.upgrade(engine)
        assert db.schema_revision(engine) == db.HEAD_REVISION and TABLES <= _tables(engine)
        db.downgrade(engine, "base")
        assert db.schema_revision(engine) is None and not (_tables(engine) & TABLES)
        db.upgrade(engine, "head")
        assert db.schema_revision(engine) == db.HEAD_REVISION
        # the migrated schema is exactly what the models declare
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_make_engine_migrates_on_first_use(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        assert db.schema_revision(engine) == db.HEAD_REVISION
        db.ensure_schema(engine)  # idempotent
        assert db.schema_revision(engine) == db.HEAD_REVISION
    finally:
        engine.dispose()
