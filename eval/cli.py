"""`coe router …` and `coe eval …` sub-apps. Commands live in eval/commands_router.py (router
training and classification eval) and eval/commands_routing.py (cost–quality routing eval, live eval,
skill profiles); each exposes `register(router_app, eval_app, experts_app)` and imports heavy
libraries only inside its commands."""

from __future__ import annotations

import typer

router_app = typer.Typer(help="Train, inspect and deploy router artifacts.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Offline evaluation jobs: router accuracy, routing cost–quality, live runs.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    from registry.cli import experts_app

    for module in ("eval.commands_router", "eval.commands_routing", "eval.commands_quality"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:  # pragma: no cover - a command module not written yet
            continue
        mod.register(router_app, eval_app, experts_app)
    app.add_typer(router_app, name="router")
    app.add_typer(eval_app, name="eval")
