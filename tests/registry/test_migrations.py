"""Alembic migrations: upgrade from empty, downgrade to base, upgrade again; models match migrations."""

from __future__ import annotations

from sqlalchemy import inspect

from registry import db
from registry.models import Base

TABLES = {"expert", "category", "category_expert", "skill_score", "api_key", "setting", "registry_revision"}
#: migration 0004
RUNTIME_TABLES = {"stored_response", "session_affinity"}


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
        assert db.schema_revision(engine) == db.HEAD_REVISION and TABLES | RUNTIME_TABLES <= _tables(engine)
        db.downgrade(engine, "base")
        assert db.schema_revision(engine) is None and not (_tables(engine) & (TABLES | RUNTIME_TABLES))
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


def test_0004_upgrades_a_database_in_use_at_0003(db_url: str) -> None:
    """An existing registry (at 0003, with experts, keys and decisions) gains the two tables and keeps
    its data; downgrading to 0003 drops only them."""
    from registry import Registry
    from registry import repository as repo

    engine = db.make_engine(db_url, migrate=False)
    try:
        db.upgrade(engine, "0003")
        assert db.schema_revision(engine) == "0003" and not (_tables(engine) & RUNTIME_TABLES)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO expert (name, base_url, model, cost_input_per_m, cost_output_per_m, max_context,"
                " max_concurrency, timeout_s, enabled, tags, notes, capabilities, created_at, updated_at)"
                " VALUES ('math', 'http://h:1/v1', 'm', 0, 0, 4096, 16, 60, true, '[]', '', '[\"tools\"]',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        db.upgrade(engine)
        assert db.schema_revision(engine) == db.HEAD_REVISION and RUNTIME_TABLES <= _tables(engine)
        with Registry(db_url, engine=engine) as reg:
            with reg.session(write=False) as s:
                assert [(e.name, e.capabilities) for e in repo.list_experts(s)] == [("math", ("tools",))]
            reg.put_response(id="resp_m", key_id=None, expert="math", model="m", input_items=[], response={})
            reg.remember_affinity(["tool:x"], "math", 60)
            assert reg.affinity_expert(["tool:x"]) == "math" and reg.get_response("resp_m", key_id=None)
        db.downgrade(engine, "0003")
        assert db.schema_revision(engine) == "0003" and not (_tables(engine) & RUNTIME_TABLES)
        assert "expert" in _tables(engine)
    finally:
        engine.dispose()
