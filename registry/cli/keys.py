"""`coe keys …`: API keys of the service, their limits and their usage (only salted hashes are stored)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from registry.cli.common import JsonOpt, command_group, done, emit_json, listing, open_registry, report
from registry.records import SCOPES

if TYPE_CHECKING:
    from registry.records import ApiKeyRecord, KeyUsageRecord


def build_keys_app() -> typer.Typer:
    return command_group(
        "API keys of the service (only salted hashes are stored).",
        {"create": keys_create, "update": keys_update, "list": keys_list, "revoke": keys_revoke},
    )


RpmOpt = Annotated[int | None, typer.Option("--rpm", help="Requests per minute (0 = no limit).")]
TpmOpt = Annotated[int | None, typer.Option("--tpm", help="Tokens per minute (0 = no limit).")]
BudgetOpt = Annotated[
    float | None,
    typer.Option("--budget-usd", help="USD the key may spend per budget period (0 = no budget)."),
]
PeriodOpt = Annotated[
    str | None, typer.Option("--budget-period", help="day | month | total (when the spend resets).")
]


def _limits(rpm: int | None, tpm: int | None, budget_usd: float | None, period: str | None) -> dict[str, Any]:
    """The limit options given on the command line (absent ones are left as they are)."""
    from registry.repository import UNSET

    return {
        "rpm": UNSET if rpm is None else rpm,
        "tpm": UNSET if tpm is None else tpm,
        "budget_usd": UNSET if budget_usd is None else budget_usd,
        "budget_period": UNSET if period is None else period.strip().lower(),
    }


def _key_limits_dict(k: ApiKeyRecord) -> dict[str, Any]:
    return {"rpm": k.rpm, "tpm": k.tpm, "budget_usd": k.budget_usd, "budget_period": k.budget_period}


def keys_create(
    ctx: typer.Context,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help=f"{' and/or '.join(SCOPES)} (repeatable).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label for people.")] = "",
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    budget_usd: BudgetOpt = None,
    budget_period: PeriodOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it once (only its salted hash is stored)."""
    from registry import repository as repo
    from registry import usage

    with open_registry(ctx) as reg, reg.session() as s:
        rec, plaintext = repo.create_api_key(s, scopes=scope or [], name=name)
        if any(v is not None for v in (rpm, tpm, budget_usd, budget_period)):
            rec = usage.set_key_limits(s, key_id=rec.id, **_limits(rpm, tpm, budget_usd, budget_period))
    if as_json:
        emit_json(
            {
                "id": rec.id,
                "name": rec.name,
                "scopes": list(rec.scopes),
                "key": plaintext,
                **_key_limits_dict(rec),
            }
        )
        return
    typer.echo(plaintext)
    done(f"created key {rec.id} ({', '.join(rec.scopes)}); store it now, it cannot be shown again")


def keys_update(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    budget_usd: BudgetOpt = None,
    budget_period: PeriodOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a key's limits (the options given; 0 removes a limit). Replicas apply it within
    COE_USAGE_FLUSH_S seconds."""
    from registry import usage

    with open_registry(ctx) as reg, reg.session() as s:
        rec = usage.set_key_limits(s, key_id=key_id, **_limits(rpm, tpm, budget_usd, budget_period))
    limits = _key_limits_dict(rec)
    report(
        as_json,
        {"id": rec.id, **limits},
        f"updated key {rec.id}: " + ", ".join(f"{k}={v}" for k, v in limits.items()),
    )


def _key_listing(k: ApiKeyRecord, u: KeyUsageRecord | None) -> dict[str, Any]:
    """One key of `coe keys list`: its record, limits and usage in the current period (u; None = none)."""
    from registry import usage

    return {
        "id": k.id,
        "name": k.name,
        "scopes": list(k.scopes),
        "created_at": k.created_at.isoformat(),
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        **_key_limits_dict(k),
        "usage": {
            "period_start": u.period_start if u else usage.period_start(k.budget_period),
            "requests": u.requests if u else 0,
            "prompt_tokens": u.prompt_tokens if u else 0,
            "completion_tokens": u.completion_tokens if u else 0,
            "cost_usd": u.cost_usd if u else 0.0,
        },
    }


def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List API keys (ids, names, scopes, limits, usage in the current budget period; never the keys)."""
    from registry import repository as repo
    from registry import usage

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        keys = repo.list_api_keys(s)
        used = usage.current_usage(s)
    data = [_key_listing(k, used.get(k.id)) for k in keys]

    def budget(d: dict[str, Any]) -> str:
        spent = f"${d['usage']['cost_usd']:.4f}"
        return f"{spent} / ${d['budget_usd']:g}" if d["budget_usd"] is not None else spent

    listing(
        as_json,
        data,
        "API keys",
        [
            "id",
            "name",
            "scopes",
            "rpm",
            "tpm",
            "spent / budget",
            "period",
            "requests",
            "tokens",
            "created",
            "revoked",
        ],
        [
            [
                d["id"],
                d["name"],
                ",".join(d["scopes"]),
                d["rpm"] or "",
                d["tpm"] or "",
                budget(d),
                f"{d['budget_period']} from {d['usage']['period_start']}",
                d["usage"]["requests"],
                d["usage"]["prompt_tokens"] + d["usage"]["completion_tokens"],
                d["created_at"][:19],
                (d["revoked_at"] or "")[:19],
            ]
            for d in data
        ],
        keys=2,
        optional=("created",),
    )


def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke an API key by id."""
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session() as s:
        repo.revoke_api_key(s, key_id=key_id)
    done(f"revoked key {key_id}")
