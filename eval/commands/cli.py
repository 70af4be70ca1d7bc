"""`coe router …` and `coe eval …` as Typer app factories, plus the plain `profile` command that
deploy/ops/cli.py attaches as `coe experts profile`. The commands live in eval/commands/router.py (router
training and classification eval), eval/commands/sources.py (the held-out-source eval),
eval/commands/routing.py (cost–quality routing eval, live eval,
skill profiles) and eval/commands/quality.py (quality heads); each imports heavy libraries only inside
its commands and reads settings through `router.cli_context.command_settings(ctx)`.

Nothing here touches another package's app: deploy/ops/cli.py, the one assembler, adds these apps to `coe`
(and `coe router deploy`, which lives in deploy/ops/commands.py, to the router app it builds here)."""

from __future__ import annotations

import typer

from eval.commands import quality as commands_quality
from eval.commands import router as commands_router
from eval.commands import routing as commands_routing
from eval.commands import sources as commands_sources

#: `coe experts profile`: skill scores from an eval result or from feedback into the registry
profile = commands_routing.profile


def build_router_app() -> typer.Typer:
    """`coe router`: train, inspect, extend and calibrate router artifacts."""
    app = typer.Typer(help="Train, inspect and deploy router artifacts.", no_args_is_help=True)
    app.command("train")(commands_router.train)
    app.command("info")(commands_router.info)
    app.command("add-category")(commands_router.add_category)
    app.command("calibrate")(commands_quality.calibrate)
    return app


def build_eval_app() -> typer.Typer:
    """`coe eval`: offline and live evaluation jobs."""
    app = typer.Typer(
        help="Offline evaluation jobs: router accuracy, routing cost–quality, live runs.",
        no_args_is_help=True,
    )
    app.command("router")(commands_router.eval_router)
    app.command("sources")(commands_sources.eval_sources)
    app.command("routing")(commands_routing.routing)
    app.command("live")(commands_routing.live)
    return app


__all__ = ["build_eval_app", "build_router_app", "profile"]
