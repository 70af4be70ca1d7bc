from __future__ import annotations

import pytest

from tests.experts.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def local_server():
    """The real SmolLM2 expert server, started once per test session (converts the GGUF on first use)."""
    from experts.local_server import default_data_dir, start_local_server

    handle = start_local_server(0, data_dir=default_data_dir(), timeout=300, threads=1)
    try:
        yield handle
    finally:
        handle.stop()
