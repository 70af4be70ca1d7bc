from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on a temp SQLite file and on a real PostgreSQL database."""
    return request.getfixturevalue("sqlite_db_url" if request.param == "sqlite" else "postgres_db_url")
