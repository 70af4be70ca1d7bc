"""`coe status` against a live in-process server (real SQLite registry, router/gateway doubles), and the
CLI's tables at 80 columns: names and ids always show whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.ops.cli import _register, app
from deploy.pipeline.ingress import Ingress
from deploy.settings import REPO_ROOT, Settings
from registry import Registry
from registry import repository as repo
from tests.deploy.doubles import FakeGateway, FakeRouter
from tests.deploy.live import serve_app

LONG = "local-general-purpose-assistant-with-a-long-name"


@pytest.fixture
def registry(sqlite_db_url: str) -> Iterator[Registry]:
    with Registry(sqlite_db_url) as reg:
        with reg.session() as s:
            for name in (LONG, "local-math", "general", "math"):
                repo.add_expert(
                    s,
                    name=name,
                    base_url="http://127.0.0.1:9/v1",
                    model="HuggingFaceTB/SmolLM2-135M-Instruct",
                    tags=["generalist"] if name == "general" else [],
                    capabilities=["tools", "json"],
                )
        yield reg


@pytest.fixture
def live(registry: Registry, tmp_path: Path) -> Iterator[str]:
    settings = Settings(database_url=registry.url, data_dir=tmp_path)
    ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=registry, key_ttl_s=0)
    with serve_app(ingress.build_asgi_app()) as base:
        yield base


def coe(*args: str, env: dict[str, str] | None = None) -> Any:
    _register()
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", **(env or {})})


def test_status_table_keeps_names_whole(live: str) -> None:
    res = coe("status", "--url", live)
    assert res.exit_code == 0, res.output
    assert LONG in res.stdout and "local-math" in res.stdout and "…" not in res.stdout
    assert "router test-v1 (ready)" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


def test_status_json_is_the_admin_status(live: str) -> None:
    res = coe("status", "--url", live, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["object"] == "coe.status" and {e["name"] for e in data["experts"]} >= {LONG, "math"}


def coe_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point (its one-line error mapping), in a subprocess."""
    base = {k: v for k, v in os.environ.items() if k != "COE_API_KEY"}
    full = {**base, "COLUMNS": "80", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", *args], env=full, capture_output=True, text=True, timeout=120
    )


def test_status_auth_errors_are_one_line(live: str, registry: Registry) -> None:
    with registry.session() as s:
        _, admin = repo.create_api_key(s, scopes=["admin"])
        _, query = repo.create_api_key(s, scopes=["query"])
    res = coe_main("status", "--url", live)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "missing API key" in res.stderr
    res = coe_main("status", "--url", live, "--api-key", query)
    assert res.returncode == 1 and "lacks the 'admin' scope" in res.stderr
    res = coe("status", "--url", live, env={"COE_API_KEY": admin})
    assert res.exit_code == 0, res.output


def test_status_bad_input_and_unreachable() -> None:
    res = coe_main("status", "--url", "localhost:8000")
    assert res.returncode == 2 and res.stderr.startswith("error: --url must start with http")
    res = coe_main("status", "--url", "http://127.0.0.1:1")
    assert res.returncode == 1 and "cannot reach the service" in res.stderr and res.stderr.count("\n") == 1


def test_cli_tables_show_names_whole_at_80_columns(registry: Registry) -> None:
    env = {"COE_DATABASE_URL": registry.url}
    with registry.session() as s:
        rec, _ = repo.create_api_key(s, scopes=["query", "admin"], name="operator-laptop-of-the-night-shift")
        repo.add_category(s, name="computer-science-and-software-engineering")
        repo.map_expert(s, category="computer-science-and-software-engineering", expert=LONG, rank=1)
    for args, names in (
        (["experts", "list"], [LONG, "local-math"]),
        (["keys", "list"], [rec.id, "operator-laptop-of-the-night-shift"]),
        (["categories", "list"], ["computer-science-and-software-engineering"]),
        (["experts", "show", LONG], [LONG]),
    ):
        for columns in ("80", "100"):
            res = coe(*args, env={**env, "COLUMNS": columns})
            assert res.exit_code == 0, res.output
            assert "…" not in res.stdout, res.stdout
            for name in names:
                assert name in res.stdout, (args, columns, res.stdout)
            assert max(len(line) for line in res.stdout.splitlines()) <= int(columns)
