"""The `coe` command, and the one place that assembles it (`_register`). One Typer sub-app per noun; each
lives beside the code it drives (registry/cli/, eval/commands/cli.py, deploy/ops/commands.py), is built by
a factory,
reads its settings from the context this module puts there (router/cli_context.py), and imports heavy
libraries only inside commands, so `coe experts --help` never loads torch or ray.

Errors: every CoeError becomes one line on stderr and a non-zero exit (2 for bad input, 1 otherwise),
and so does a usage error (unknown option, missing argument: exit 2); no traceback reaches the user
(set COE_DEBUG=1 to see one)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from deploy.settings import Settings, load_settings
from router.errors import BadRequest, CoeError

app = typer.Typer(
    name="coe",
    help="CoE Router: one OpenAI-compatible endpoint in front of many specialised LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Context:
    """What every command receives in ctx.obj: the settings, built on first use."""

    def __init__(self, config: Path | None) -> None:
        self._config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self._config)
            except ValueError as exc:
                raise BadRequest(f"invalid settings: {settings_problem(exc)}") from None
        return self._settings


def settings_problem(exc: ValueError) -> str:
    """One line naming each bad setting by its variable: pydantic's own message spans several."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for e in errors():
        field = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"COE_{field.upper()}: {msg}" if field else msg)
    return "; ".join(parts) or str(exc)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file (same keys as COE_* variables).")
    ] = None,
) -> None:
    ctx.obj = Context(config)


_registered = False


def _register() -> None:
    """Assemble `coe` on `app`: the one place that does (idempotent: tests call main() often). The other
    packages expose app factories and plain command functions; commands that join two packages
    (`coe experts probe`, `coe experts profile`, `coe router deploy`) are attached here."""
    global _registered
    if _registered:
        return
    _registered = True
    from deploy.ops.commands import register as register_deploy
    from deploy.ops.commands_probe import experts_probe
    from eval.commands.cli import build_eval_app, build_router_app, profile
    from registry.cli import build_registry_apps

    registry_apps = build_registry_apps()
    registry_apps["experts"].command("probe")(experts_probe)
    registry_apps["experts"].command("profile")(profile)
    for name, sub_app in registry_apps.items():
        app.add_typer(sub_app, name=name)
    router_app = build_router_app()
    app.add_typer(router_app, name="router")
    app.add_typer(build_eval_app(), name="eval")
    register_deploy(app, router_app)


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register()
    try:
        # standalone_mode=False: usage errors come back here, to become one line like ours
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored click) usage and parameter errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())  # `coe experts`: the group's help, as before
            sys.exit(2)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"error: {' '.join(message.split())}{hint}", err=True)
        sys.exit(int(getattr(exc, "exit_code", 2) or 2))
    except typer.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except CoeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(2 if isinstance(exc, BadRequest) else 1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # last line of defence: one line, no traceback
        if os.environ.get("COE_DEBUG"):
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (set COE_DEBUG=1 for a traceback)", err=True
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
