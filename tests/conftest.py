"""Shared fixtures. Registry databases: `sqlite_db_url` (a temp file) and `postgres_db_url` (a fresh
database on the server that scripts/with-postgres.sh starts and names in COE_TEST_POSTGRES_URL).

PostgreSQL tests skip only when COE_TEST_POSTGRES=0; without the URL otherwise they FAIL with a message,
so CI cannot skip them silently. Run them through `scripts/with-postgres.sh` (scripts/run-tests.sh does)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

#: the environment of the subprocesses tests start (`coe up`, expert servers): offline, no Ray auth or stats
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}

_db_counter = itertools.count()


@pytest.fixture
def sqlite_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of the test PostgreSQL server's maintenance database."""
    if os.environ.get("COE_TEST_POSTGRES") == "0":
        pytest.skip("PostgreSQL tests disabled (COE_TEST_POSTGRES=0)")
    url = os.environ.get("COE_TEST_POSTGRES_URL")
    if not url:
        pytest.fail(
            "COE_TEST_POSTGRES_URL is not set: run the tests through scripts/with-postgres.sh "
            "(scripts/run-tests.sh does), or set COE_TEST_POSTGRES=0 to skip the PostgreSQL tests",
            pytrace=False,
        )
    return url


@pytest.fixture
def postgres_db_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"coe_t{os.getpid()}_{next(_db_counter)}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
