"""`coe decisions list|export`: the decision log and its feedback; `profile_from_feedback`, the body of
`coe experts profile --from-feedback` (eval/commands/routing.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from registry.cli.common import (
    DryRun,
    JsonOpt,
    command_group,
    done,
    emit_json,
    listing,
    open_registry,
    write_output,
)


def build_decisions_app() -> typer.Typer:
    return command_group(
        "The decision log (every completion's routing decision) and its feedback.",
        {"list": decisions_list, "export": decisions_export},
    )


def decisions_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", help="Newest N decisions.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The newest decisions with their feedback."""
    from registry import decisions

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        rows = decisions.list_decisions(s, limit=limit)
    data: list[dict[str, Any]] = [
        {
            "id": r.id,
            "created_at": r.created_at.isoformat(),
            "key_id": r.key_id,
            "policy": r.policy,
            "categories": [[c, p] for c, p in r.categories],
            "experts": list(r.experts),
            "answered_by": r.answered_by,
            "cost_usd": r.cost_usd,
            "latency_ms": r.latency_ms,
            "cache": r.cache,
            "prompt": r.prompt,
            "feedback": None
            if r.feedback_score is None
            else {"score": r.feedback_score, "comment": r.feedback_comment},
        }
        for r in rows
    ]
    listing(
        as_json,
        data,
        "Decisions",
        ["time", "id", "key", "policy", "category", "answered by", "cost $", "ms", "cache", "feedback"],
        [
            [
                d["created_at"][:19],
                d["id"],
                d["key_id"] or "",
                d["policy"],
                f"{d['categories'][0][0]} {d['categories'][0][1]:.2f}" if d["categories"] else "",
                d["answered_by"] or "",
                f"{d['cost_usd']:.6f}",
                f"{d['latency_ms']:.1f}",
                d["cache"] or "",
                "" if d["feedback"] is None else f"{d['feedback']['score']:g}",
            ]
            for d in data
        ],
    )


def decisions_export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Output JSONL file ('-' for stdout).")],
) -> None:
    """Scored decisions in the generic outcome format, one JSON object a line:
    {"id", "prompt", "category", "outcomes": {expert: {"quality": score, "cost_usd": cost}}}."""
    from registry import decisions

    with open_registry(ctx) as reg, reg.session(write=False) as s:
        rows = decisions.outcome_rows(decisions.list_decisions(s, limit=None, with_feedback=True))
    if write_output(file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)):
        done(f"wrote {len(rows)} scored decision(s) to {file}")


def profile_from_feedback(
    ctx: typer.Context, prior_strength: float | None, dry_run: bool, as_json: bool
) -> None:
    """`coe experts profile --from-feedback`: the Bayesian update in registry/decisions.py."""
    from registry import decisions

    updates: list[Any] = []
    with open_registry(ctx) as reg:
        try:
            with reg.session() as s:
                updates = decisions.profile_from_feedback(s, prior_strength=prior_strength)
                if dry_run:
                    raise DryRun
        except DryRun:
            pass
    rows = [
        {
            "expert": u.expert,
            "category": u.category,
            "prior_score": u.prior_score,
            "prior_n": u.prior_n,
            "feedback": u.feedback,
            "score": u.score,
            "n": u.n,
        }
        for u in updates
    ]
    if as_json:
        emit_json({"dry_run": dry_run, "updates": rows})
        return
    for r in rows:
        typer.echo(
            f"{r['expert']} × {r['category']}: {r['prior_score']:.3f} (n={r['prior_n']:g}) + "
            f"{r['feedback']} feedback → {r['score']:.3f} (n={r['n']})"
        )
    done(
        ("dry run, nothing written: " if dry_run else "")
        + f"{len(rows)} skill score(s) updated from feedback"
    )
