"""Admin CLI of the registry: `coe experts …`, `coe categories …`, `coe keys …`, `coe registry …`,
`coe db …`. One Typer sub-app per noun, one transaction per command, `--json` on every listing.
Import-light on purpose: SQLAlchemy, Alembic, httpx and YAML load inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.errors import BadRequest, CoeError

if TYPE_CHECKING:
    from registry.records import CategoryRecord, ExpertRecord
    from registry.service import Registry

experts_app = typer.Typer(
    help="Register, inspect and probe experts (OpenAI-compatible LLM endpoints).", no_args_is_help=True
)
categories_app = typer.Typer(help="Categories and their ranked experts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the service (only salted hashes are stored).", no_args_is_help=True)
registry_app = typer.Typer(help="Export and import the whole registry as YAML.", no_args_is_help=True)
db_app = typer.Typer(help="Registry database schema migrations.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def register(app: typer.Typer) -> None:
    app.add_typer(experts_app, name="experts")
    app.add_typer(categories_app, name="categories")
    app.add_typer(keys_app, name="keys")
    app.add_typer(registry_app, name="registry")
    app.add_typer(db_app, name="db")


# --- helpers ------------------------------------------------------------------------------------------


def _database_url(ctx: typer.Context) -> str:
    obj = ctx.find_root().obj
    if obj is not None and hasattr(obj, "settings"):
        return str(obj.settings.database_url)
    from deploy.settings import load_settings  # sub-app used on its own

    return load_settings().database_url


def _registry(ctx: typer.Context) -> Registry:
    from registry.service import Registry

    return Registry(_database_url(ctx))


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    Console().print(table)


def _expert_dict(e: ExpertRecord) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(e)
    d["tags"] = list(e.tags)
    d["capabilities"] = list(e.capabilities)
    d["created_at"] = e.created_at.isoformat()
    d["updated_at"] = e.updated_at.isoformat()
    return d


def _category_dict(c: CategoryRecord) -> dict[str, Any]:
    return {
        "name": c.name,
        "description": c.description,
        "experts": [{"expert": n, "rank": r} for n, r in c.experts],
    }


def _done(message: str) -> None:
    typer.echo(message, err=True)


# --- experts ------------------------------------------------------------------------------------------

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


@experts_app.command("add")
def experts_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique expert name.")],
    url: UrlOpt = None,
    model: ModelOpt = None,
    api_key_env: KeyEnvOpt = None,
    cost_in: CostInOpt = 0.0,
    cost_out: CostOutOpt = 0.0,
    max_context: CtxOpt = 4096,
    max_concurrency: ConcOpt = 16,
    timeout: TimeoutOpt = 60.0,
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
    with _registry(ctx) as reg, reg.session() as s:
        rec = repo.add_expert(
            s,
            name=name,
            base_url=url,
            model=model,
            api_key_env=api_key_env,
            cost_input_per_m=0.0 if cost_in is None else cost_in,
            cost_output_per_m=0.0 if cost_out is None else cost_out,
            max_context=4096 if max_context is None else max_context,
            max_concurrency=16 if max_concurrency is None else max_concurrency,
            timeout_s=60.0 if timeout is None else timeout,
            enabled=not disabled,
            tags=tag or (),
            notes=notes or "",
            capabilities=capabilities or "",
        )
    if as_json:
        _emit_json(_expert_dict(rec))
    else:
        _done(f"added expert {name}")


@experts_app.command("update")
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
    with _registry(ctx) as reg, reg.session() as s:
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
        _emit_json(_expert_dict(rec))
    else:
        _done(f"updated expert {name}")


@experts_app.command("list")
def experts_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the experts."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session(write=False) as s:
        experts = repo.list_experts(s)
    if as_json:
        _emit_json([_expert_dict(e) for e in experts])
        return
    _table(
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
    )


@experts_app.command("show")
def experts_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show one expert with its categories and skill scores."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session(write=False) as s:
        rec = repo.get_expert(s, name=name)
        cats = [(c.name, r) for c in repo.list_categories(s) for n, r in c.experts if n == name]
        skills = repo.list_skill_scores(s, expert=name)
    data = _expert_dict(rec)
    data["categories"] = [{"category": c, "rank": r} for c, r in cats]
    data["skills"] = [
        {"category": k.category, "score": k.score, "n": k.n, "source": k.source} for k in skills
    ]
    if as_json:
        _emit_json(data)
        return
    rows = [
        [k, ", ".join(map(str, v)) if isinstance(v, list) and k in ("tags", "capabilities") else v]
        for k, v in data.items()
        if k not in ("categories", "skills")
    ]
    rows.append(["categories", ", ".join(f"{c}#{r}" for c, r in cats)])
    rows.append(["skills", ", ".join(f"{k.category}={k.score:.3f} (n={k.n})" for k in skills)])
    _table(f"expert {name}", ["field", "value"], rows)


@experts_app.command("remove")
def experts_remove(ctx: typer.Context, name: str) -> None:
    """Remove an expert (with its category mappings and skill scores)."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.remove_expert(s, name=name)
    _done(f"removed expert {name}")


@experts_app.command("enable")
def experts_enable(ctx: typer.Context, name: str) -> None:
    """Enable an expert."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.set_expert_enabled(s, name=name, enabled=True)
    _done(f"enabled expert {name}")


@experts_app.command("disable")
def experts_disable(ctx: typer.Context, name: str) -> None:
    """Disable an expert (routing skips it; it stays registered)."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.set_expert_enabled(s, name=name, enabled=False)
    _done(f"disabled expert {name}")


@experts_app.command("probe")
def experts_probe(
    ctx: typer.Context,
    name: str,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds per request (default: the expert's timeout).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check an expert: GET <base_url>/models and a 1-token chat completion; exit 1 if either fails."""
    import os

    from registry import repository as repo

    with _registry(ctx) as reg, reg.session(write=False) as s:
        rec = repo.get_expert(s, name=name)
    headers = {}
    key_problem = None
    if rec.api_key_env:
        key = os.environ.get(rec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        else:
            key_problem = f"environment variable {rec.api_key_env} is not set"
    checks = _probe(rec.base_url, rec.model, headers, timeout or rec.timeout_s)
    ok = all(c["ok"] for c in checks)
    if as_json:
        _emit_json({"expert": name, "ok": ok, "checks": checks, "warning": key_problem})
    else:
        if key_problem:
            typer.echo(f"warning: {key_problem}; probing without a key", err=True)
        for c in checks:
            status = "ok" if c["ok"] else f"FAILED: {c['error']}"
            typer.echo(f"{name} {c['check']:<16} {c['latency_ms']:8.1f} ms  {status}")
    if not ok:
        failed = next(c for c in checks if not c["ok"])
        typer.echo(f"error: expert {name} failed {failed['check']}: {failed['error']}", err=True)
        raise typer.Exit(1)


def _probe(base_url: str, model: str, headers: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    import time

    import httpx

    results: list[dict[str, Any]] = []
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    # no redirects: a probe must not carry the expert's key to another host (nor report it as healthy)
    with httpx.Client(timeout=timeout, headers=headers, follow_redirects=False) as client:
        for check, method, path, payload in (
            ("models", "GET", "/models", None),
            ("chat_completion", "POST", "/chat/completions", body),
        ):
            start = time.perf_counter()
            error = None
            try:
                resp = client.request(method, base_url.rstrip("/") + path, json=payload)
                if resp.is_redirect:
                    where = resp.headers.get("location", "?")[:200]
                    error = f"HTTP {resp.status_code} redirect to {where} (the probe follows no redirects)"
                elif resp.status_code >= 400:
                    error = f"HTTP {resp.status_code}: {resp.text.strip()[:200]}"
                else:
                    data = resp.json()
                    if check == "models" and not isinstance(data.get("data"), list):
                        error = "response has no 'data' list"
                    elif check == "models" and model not in {m.get("id") for m in data["data"]}:
                        error = (
                            f"model {model!r} is not served (served: "
                            f"{', '.join(str(m.get('id')) for m in data['data'][:5])})"
                        )
                    elif check == "chat_completion" and not data.get("choices"):
                        error = "response has no choices"
            except httpx.TimeoutException:
                error = f"timed out after {timeout:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except (ValueError, AttributeError, TypeError) as exc:
                error = f"malformed response: {exc}"
            results.append(
                {
                    "check": check,
                    "ok": error is None,
                    "error": error,
                    "latency_ms": round((time.perf_counter() - start) * 1000, 1),
                }
            )
    return results


# --- categories ---------------------------------------------------------------------------------------


@categories_app.command("add")
def categories_add(
    ctx: typer.Context,
    name: str,
    description: Annotated[str, typer.Option("--description", help="What queries belong here.")] = "",
) -> None:
    """Add a category."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.add_category(s, name=name, description=description)
    _done(f"added category {name}")


@categories_app.command("list")
def categories_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List categories with their ranked experts."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session(write=False) as s:
        cats = repo.list_categories(s)
    if as_json:
        _emit_json([_category_dict(c) for c in cats])
        return
    _table(
        "categories",
        ["name", "experts (rank)", "description"],
        [[c.name, ", ".join(f"{n}#{r}" for n, r in c.experts), c.description] for c in cats],
    )


@categories_app.command("remove")
def categories_remove(ctx: typer.Context, name: str) -> None:
    """Remove a category (with its mappings and skill scores)."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.remove_category(s, name=name)
    _done(f"removed category {name}")


@categories_app.command("map")
def categories_map(
    ctx: typer.Context,
    category: str,
    expert: str,
    rank: Annotated[int, typer.Option("--rank", help="1 = first choice.")] = 1,
) -> None:
    """Map an expert to a category with a rank (mapping again changes the rank)."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.map_expert(s, category=category, expert=expert, rank=rank)
    _done(f"mapped {expert} to {category} at rank {rank}")


@categories_app.command("unmap")
def categories_unmap(ctx: typer.Context, category: str, expert: str) -> None:
    """Remove an expert from a category."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.unmap_expert(s, category=category, expert=expert)
    _done(f"unmapped {expert} from {category}")


# --- keys ---------------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="query and/or admin (repeatable).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label for people.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it once (only its salted hash is stored)."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        rec, plaintext = repo.create_api_key(s, scopes=scope or [], name=name)
    if as_json:
        _emit_json({"id": rec.id, "name": rec.name, "scopes": list(rec.scopes), "key": plaintext})
        return
    typer.echo(plaintext)
    _done(f"created key {rec.id} ({', '.join(rec.scopes)}); store it now, it cannot be shown again")


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List API keys (ids, names, scopes; never the keys)."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session(write=False) as s:
        keys = repo.list_api_keys(s)
    data: list[dict[str, Any]] = [
        {
            "id": k.id,
            "name": k.name,
            "scopes": list(k.scopes),
            "created_at": k.created_at.isoformat(),
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        }
        for k in keys
    ]
    if as_json:
        _emit_json(data)
        return
    _table(
        "API keys",
        ["id", "name", "scopes", "created", "revoked"],
        [
            [d["id"], d["name"], ",".join(d["scopes"]), d["created_at"][:19], (d["revoked_at"] or "")[:19]]
            for d in data
        ],
    )


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke an API key by id."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session() as s:
        repo.revoke_api_key(s, key_id=key_id)
    _done(f"revoked key {key_id}")


# --- registry export / import -------------------------------------------------------------------------


def _dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


@registry_app.command("export")
def registry_export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="YAML file to write ('-' for stdout).")],
) -> None:
    """Export experts, categories, skill scores and settings (not API keys) as YAML."""
    from registry import repository as repo

    with _registry(ctx) as reg, reg.session(write=False) as s:
        data = repo.export_registry(s)
    text = _dump_yaml(data)
    if str(file) == "-":
        sys.stdout.write(text)
        return
    try:
        file.write_text(text)
    except OSError as exc:
        raise BadRequest(f"cannot write {file}: {exc.strerror or exc}") from None
    _done(f"exported {len(data['experts'])} experts, {len(data['categories'])} categories to {file}")


@registry_app.command("import")
def registry_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="YAML file written by `coe registry export` ('-' for stdin).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and report; change nothing.")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Also remove what the file does not list.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a registry file in one transaction: all of it or nothing."""
    import yaml

    from registry import repository as repo

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadRequest(f"{file} is not valid YAML{where}: {problem}") from None

    class _DryRun(Exception):
        pass

    summary = None
    with _registry(ctx) as reg:
        try:
            with reg.session() as s:
                try:
                    summary = repo.import_registry(s, data=data, replace=replace)
                except CoeError as exc:
                    raise type(exc)(f"{file}: {exc.message}") from None
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
    assert summary is not None
    if as_json:
        _emit_json(
            {
                "dry_run": dry_run,
                "added": summary.added,
                "updated": summary.updated,
                "removed": summary.removed,
                "revision": None if dry_run else summary.revision,
            }
        )
    else:
        _done(("dry run, nothing changed: would have " if dry_run else "imported: ") + summary.describe())


# --- db -----------------------------------------------------------------------------------------------


def _engine(ctx: typer.Context) -> Any:
    from registry.db import make_engine

    return make_engine(_database_url(ctx), migrate=False)


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
) -> None:
    """Migrate the registry schema up to REVISION (default: the newest)."""
    from registry import db

    db.check_revision_arg(revision)
    engine = _engine(ctx)
    try:
        db.upgrade(engine, revision)
        _done(f"registry schema at {db.schema_revision(engine) or 'base'}")
    finally:
        engine.dispose()


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops everything).")],
) -> None:
    """Migrate the registry schema down to REVISION."""
    from registry import db

    db.check_revision_arg(revision)
    engine = _engine(ctx)
    try:
        db.downgrade(engine, revision)
        _done(f"registry schema at {db.schema_revision(engine) or 'base'}")
    finally:
        engine.dispose()


@db_app.command("current")
def db_current(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the schema revision of the registry database (and whether it is the newest)."""
    from registry import db

    engine = _engine(ctx)
    try:
        current = db.schema_revision(engine)
    finally:
        engine.dispose()
    data = {
        "database": db.safe_url(_database_url(ctx)),
        "revision": current,
        "head": db.HEAD_REVISION,
        "up_to_date": current == db.HEAD_REVISION,
    }
    if as_json:
        _emit_json(data)
    else:
        suffix = " (head)" if data["up_to_date"] else f" (head is {db.HEAD_REVISION})"
        typer.echo(f"{current or 'base (empty)'}{suffix}")
