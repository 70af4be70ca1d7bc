"""`coe up` and `coe router deploy`. Heavy imports (ray, torch) happen inside the commands only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def up(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option("--check", "--smoke", help="Start, send one real query, print answer and route, stop."),
    ] = False,
    host: Annotated[
        str | None, typer.Option(help="HTTP bind address (default from settings: loopback).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (0 = a free one).")] = None,
    question: Annotated[str | None, typer.Option(help="The --check query.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray and replica logs.")] = False,
) -> None:
    """Run the embedded default: local CPU experts, SQLite registry, the default router, Ray Serve."""
    from deploy.local import SMOKE_QUESTION
    from deploy.local import up as run_up

    settings = ctx.obj.settings
    update = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if update:
        settings = settings.model_copy(update=update)
    raise typer.Exit(run_up(settings, check=check, question=question or SMOKE_QUESTION, verbose=verbose))


def router_deploy(
    ctx: typer.Context,
    artifact: Annotated[
        Path, typer.Argument(help="Router artifact directory (manifest.json, model.npz, ...).")
    ],
) -> None:
    """Validate a router artifact and make it the live router (the service hot-swaps it)."""
    from deploy.router_service import ARTIFACT_SETTING, validate_artifact
    from registry import Registry

    settings = ctx.obj.settings
    path = artifact.expanduser().resolve()
    version = validate_artifact(path, settings)
    with Registry(settings.database_url) as reg:
        revision = reg.set_setting(ARTIFACT_SETTING, str(path))
    typer.echo(
        f"router {version} at {path} deployed (registry revision {revision}); "
        "running services swap it in within a few seconds"
    )


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    from eval.cli import router_app

    router_app.command("deploy")(router_deploy)
