"""`coe experts probe`: the registry's expert, probed with the expert client (experts/probe.py). It joins
the two packages, so it lives here; deploy/ops/cli.py attaches it to the registry's `experts` app."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli.common import JsonOpt, emit_json, open_registry


def experts_probe(
    ctx: typer.Context,
    name: str,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds per request (default: the expert's timeout).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check an expert: GET <base_url>/models and a 1-token chat completion; exit 1 if either fails."""
    from experts.probe import probe_expert
    from registry import repository as repo

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        rec = repo.get_expert(s, name=name)
    report = probe_expert(rec, timeout)
    ok, checks, key_problem = report["ok"], report["checks"], report["warning"]
    if as_json:
        emit_json(report)
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
