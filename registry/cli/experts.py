"""`coe experts …`: register, change, list, show, remove, enable and disable experts. (`coe experts probe`
lives in deploy/ops/commands_probe.py, beside the expert client it drives; deploy/ops/cli.py attaches it.)"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, get_origin

import typer

from registry.cli.common import JsonOpt, command_group, done, emit_json, listing, open_registry, report, table
from registry.spec import EXPERT_FIELDS, REQUIRED, UPDATABLE, ExpertSpec, flag
from registry.views import expert_dict
from router.errors import BadRequest

if TYPE_CHECKING:
    pass


def build_experts_app() -> typer.Typer:
    return command_group(
        "Register, inspect and probe experts (OpenAI-compatible LLM endpoints).",
        {
            "add": experts_add,
            "update": experts_update,
            "list": experts_list,
            "show": experts_show,
            "remove": experts_remove,
            "enable": experts_enable,
            "disable": experts_disable,
        },
    )


def spec_options(*, update: bool) -> list[inspect.Parameter]:
    """The command-line options of `coe experts add` (every field of registry.spec.ExpertSpec but the
    name) or `update` (the fields an update may change, plus --clear-FIELD for each list): all default to
    None, which leaves the field to the spec's default or as it is."""
    params = []
    for f in UPDATABLE if update else EXPERT_FIELDS:
        fl, kind = flag(f), ExpertSpec.model_fields[f].annotation
        assert kind is not None
        option = typer.Option(fl.flag, help=fl.help)
        params.append(inspect.Parameter(f, _KW, annotation=Annotated[kind | None, option], default=None))
        if update and get_origin(kind) is list:
            clear = typer.Option(f"--clear-{f.replace('_', '-')}", help=f"Remove every {f} entry.")
            params.append(
                inspect.Parameter(f"clear_{f}", _KW, annotation=Annotated[bool, clear], default=False)
            )
    return params


_KW = inspect.Parameter.KEYWORD_ONLY


def _spec_command(run: Callable[[typer.Context, str, dict[str, Any], bool], None], *, update: bool) -> Any:
    """A Typer command calling `run(ctx, name, fields, as_json)` with the spec fields given on the
    command line (a --clear-FIELD gives FIELD = [])."""

    def command(ctx: typer.Context, name: str, as_json: bool = False, **options: Any) -> None:
        fields = {k: v for k, v in options.items() if v is not None and not k.startswith("clear_")}
        fields.update(
            {k.removeprefix("clear_"): [] for k, v in options.items() if k.startswith("clear_") and v}
        )
        run(ctx, name, fields, as_json)

    params = [
        inspect.Parameter("ctx", _KW, annotation=typer.Context),
        inspect.Parameter("name", _KW, annotation=Annotated[str, typer.Argument(help=flag("name").help)]),
        *spec_options(update=update),
        inspect.Parameter("as_json", _KW, annotation=JsonOpt, default=False),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    return command


def _add(ctx: typer.Context, name: str, fields: dict[str, Any], as_json: bool) -> None:
    """Register an expert."""
    from registry import repository as repo

    for f in REQUIRED:
        if f != "name" and f not in fields:
            raise BadRequest(f"{flag(f).flag} is required", param=f)
    with open_registry(ctx) as reg, reg.session() as s:
        rec = repo.add_expert(s, name=name, **fields)
    report(as_json, expert_dict(rec), f"added expert {name}")


def _update(ctx: typer.Context, name: str, fields: dict[str, Any], as_json: bool) -> None:
    """Change some fields of an expert (options not given stay as they are; --api-key-env '' clears it)."""
    from registry import repository as repo

    if not fields:
        raise BadRequest("nothing to change: give at least one option (see `coe experts update --help`)")
    with open_registry(ctx) as reg, reg.session() as s:
        rec = repo.update_expert(s, name=name, **fields)
    report(as_json, expert_dict(rec), f"updated expert {name}")


experts_add = _spec_command(_add, update=False)
experts_update = _spec_command(_update, update=True)


def experts_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the experts."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        experts = repo.list_experts(s)
    listing(
        as_json,
        [expert_dict(e) for e in experts],
        "experts",
        ["name", "enabled", "model", "base_url", "$/1M in", "$/1M out", "ctx", "conc", "tags", "caps"],
        [
            [
                e.name,
                "yes" if e.enabled else "no",
                e.model,
                e.base_url,
                f"{e.cost_input_per_m:g}",
                f"{e.cost_output_per_m:g}",
                e.max_context,
                e.max_concurrency,
                ",".join(e.tags),
                ",".join(e.capabilities),
            ]
            for e in experts
        ],
        optional=("tags", "$/1M in", "$/1M out", "conc", "ctx"),
    )


def experts_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show one expert with its categories and skill scores."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        rec = repo.get_expert(s, name=name)
        cats = [(c.name, r) for c in repo.list_categories(s) for n, r in c.experts if n == name]
        skills = repo.list_skill_scores(s, expert=name)
    data = expert_dict(rec)
    data["categories"] = [{"category": c, "rank": r} for c, r in cats]
    data["skills"] = [
        {"category": k.category, "score": k.score, "n": k.n, "source": k.source} for k in skills
    ]
    if as_json:
        emit_json(data)
        return
    rows = [
        [k, ", ".join(map(str, v)) if isinstance(v, list) and k in ("tags", "capabilities") else v]
        for k, v in data.items()
        if k not in ("categories", "skills")
    ]
    rows.append(["categories", ", ".join(f"{c}#{r}" for c, r in cats)])
    rows.append(["skills", ", ".join(f"{k.category}={k.score:.3f} (n={k.n})" for k in skills)])
    table(f"expert {name}", ["field", "value"], rows)


def experts_remove(ctx: typer.Context, name: str) -> None:
    """Remove an expert (with its category mappings and skill scores)."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.remove_expert(s, name=name)
    done(f"removed expert {name}")


def experts_enable(ctx: typer.Context, name: str) -> None:
    """Enable an expert."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.set_expert_enabled(s, name=name, enabled=True)
    done(f"enabled expert {name}")


def experts_disable(ctx: typer.Context, name: str) -> None:
    """Disable an expert (routing skips it; it stays registered)."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.set_expert_enabled(s, name=name, enabled=False)
    done(f"disabled expert {name}")
