"""`coe experts …`: register, change, list, show, remove, enable and disable experts. (`coe experts probe`
lives in deploy/ops/commands_probe.py, beside the expert client it drives; deploy/ops/cli.py attaches it.)"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from registry.cli.common import JsonOpt, done, emit_json, open_registry, table
from registry.views import expert_dict
from router.defaults import EXPERT_MAX_CONCURRENCY, EXPERT_MAX_CONTEXT, EXPERT_TIMEOUT_S
from router.errors import BadRequest


def build_experts_app() -> typer.Typer:
    app = typer.Typer(
        help="Register, inspect and probe experts (OpenAI-compatible LLM endpoints).", no_args_is_help=True
    )
    app.command("add")(experts_add)
    app.command("update")(experts_update)
    app.command("list")(experts_list)
    app.command("show")(experts_show)
    app.command("remove")(experts_remove)
    app.command("enable")(experts_enable)
    app.command("disable")(experts_disable)
    return app


UrlOpt = Annotated[
    str | None, typer.Option("--url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Served model name sent in requests.")]
KeyEnvOpt = Annotated[
    str | None, typer.Option("--api-key-env", help="NAME of the env var holding the API key.")
]
CostInOpt = Annotated[float | None, typer.Option("--cost-in", help="USD per 1M prompt tokens.")]
CostOutOpt = Annotated[float | None, typer.Option("--cost-out", help="USD per 1M completion tokens.")]
CtxOpt = Annotated[int | None, typer.Option("--max-context", help="Context window in tokens.")]
ConcOpt = Annotated[int | None, typer.Option("--max-concurrency", help="Requests in flight at most.")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Request timeout in seconds.")]
TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", help="Tag (repeatable): generalist, aggregator, judge…")
]
NotesOpt = Annotated[str | None, typer.Option("--notes", help="Free text.")]
CapsOpt = Annotated[
    str | None,
    typer.Option(
        "--capabilities",
        help="What it serves beyond plain text chat, a comma list of tools,json,vision,audio ('' = none).",
    ),
]


def experts_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique expert name.")],
    url: UrlOpt = None,
    model: ModelOpt = None,
    api_key_env: KeyEnvOpt = None,
    cost_in: CostInOpt = 0.0,
    cost_out: CostOutOpt = 0.0,
    max_context: CtxOpt = EXPERT_MAX_CONTEXT,
    max_concurrency: ConcOpt = EXPERT_MAX_CONCURRENCY,
    timeout: TimeoutOpt = EXPERT_TIMEOUT_S,
    tag: TagOpt = None,
    notes: NotesOpt = "",
    capabilities: CapsOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Register it disabled.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register an expert."""
    from registry import repository as repo

    if not url:
        raise BadRequest("--url is required")
    if not model:
        raise BadRequest("--model is required")
    with open_registry(ctx) as reg, reg.session() as s:
        rec = repo.add_expert(
            s,
            name=name,
            base_url=url,
            model=model,
            api_key_env=api_key_env,
            cost_input_per_m=0.0 if cost_in is None else cost_in,
            cost_output_per_m=0.0 if cost_out is None else cost_out,
            max_context=EXPERT_MAX_CONTEXT if max_context is None else max_context,
            max_concurrency=EXPERT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency,
            timeout_s=EXPERT_TIMEOUT_S if timeout is None else timeout,
            enabled=not disabled,
            tags=tag or (),
            notes=notes or "",
            capabilities=capabilities or "",
        )
    if as_json:
        emit_json(expert_dict(rec))
    else:
        done(f"added expert {name}")


def experts_update(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Expert to change.")],
    url: UrlOpt = None,
    model: ModelOpt = None,
    api_key_env: KeyEnvOpt = None,
    cost_in: CostInOpt = None,
    cost_out: CostOutOpt = None,
    max_context: CtxOpt = None,
    max_concurrency: ConcOpt = None,
    timeout: TimeoutOpt = None,
    tag: TagOpt = None,
    notes: NotesOpt = None,
    capabilities: CapsOpt = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="Enable or disable.")] = None,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove every tag.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Change some fields of an expert (options not given stay as they are; --api-key-env '' clears it)."""
    from registry import repository as repo

    def opt(v: Any) -> Any:
        return repo.UNSET if v is None else v

    tags: Any = [] if clear_tags else (tag if tag else repo.UNSET)
    with open_registry(ctx) as reg, reg.session() as s:
        rec = repo.update_expert(
            s,
            name=name,
            base_url=opt(url),
            model=opt(model),
            api_key_env=opt(api_key_env),
            cost_input_per_m=opt(cost_in),
            cost_output_per_m=opt(cost_out),
            max_context=opt(max_context),
            max_concurrency=opt(max_concurrency),
            timeout_s=opt(timeout),
            enabled=opt(enabled),
            tags=tags,
            notes=opt(notes),
            capabilities=opt(capabilities),
        )
    if as_json:
        emit_json(expert_dict(rec))
    else:
        done(f"updated expert {name}")


def experts_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the experts."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        experts = repo.list_experts(s)
    if as_json:
        emit_json([expert_dict(e) for e in experts])
        return
    table(
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
