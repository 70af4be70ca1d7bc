"""`coe up` / `coe router deploy` are registered and validate their input (no Ray started here)."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from deploy.ops.commands import register


def app_with_commands() -> typer.Typer:
    from eval.commands.cli import build_router_app

    app, router_app = typer.Typer(), build_router_app()

    @app.callback()
    def _root(ctx: typer.Context) -> None:
        from deploy.ops.cli import Context

        ctx.obj = Context(None)

    register(app, router_app)
    app.add_typer(router_app, name="router")
    return app


def test_up_and_router_deploy_are_registered() -> None:
    app = app_with_commands()
    r = CliRunner().invoke(app, ["up", "--help"])
    assert r.exit_code == 0 and "--check" in r.output
    r = CliRunner().invoke(app, ["router", "deploy", "--help"])
    assert r.exit_code == 0 and "Validate a router artifact" in r.output


def test_router_deploy_rejects_a_missing_artifact(tmp_path: Path, monkeypatch: object) -> None:
    from router.errors import ArtifactError

    app = app_with_commands()
    monkeypatch.setenv("COE_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")  # type: ignore[attr-defined]
    r = CliRunner().invoke(app, ["router", "deploy", str(tmp_path / "nope")])
    assert r.exit_code != 0 and isinstance(r.exception, ArtifactError)


def test_a_bad_setting_is_one_line_naming_its_variable(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "COE_PROXY_LOCATION": "Nowhere", "COE_HANDLE_RETRIES": "abc"}
    env.pop("COE_CONFIG", None)
    r = subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", "experts", "list"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: invalid settings: ")
    assert "COE_PROXY_LOCATION: must be one of EveryNode, HeadOnly, Disabled" in lines[0]
    assert "COE_HANDLE_RETRIES: Input should be a valid integer" in lines[0]
