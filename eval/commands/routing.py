"""`coe eval routing` (offline cost–quality evaluation of every policy), `coe eval live` (accuracy
through a running service) and `coe experts profile --from-eval` (skill scores into the registry).
Heavy imports stay inside the commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eval.routing.result import RoutingResult
from router.cli_context import command_settings
from router.defaults import POLICY_NAMES, QUALITY_HEADS
from router.errors import BadRequest

if TYPE_CHECKING:
    from eval.outcomes import OutcomeMatrix


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _split_csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _report_issues(mat: Any, label: str) -> None:
    if not mat.issues:
        return
    _log(f"{label}: skipped {len(mat.issues)} malformed row(s):")
    for issue in mat.issues[:20]:
        _log(f"  {issue}")
    if len(mat.issues) > 20:
        _log(f"  … and {len(mat.issues) - 20} more (full list in the --json output)")


def _policies(value: str) -> tuple[str, ...]:
    pols = tuple(_split_csv(value) or ())
    unknown = [p for p in pols if p not in POLICY_NAMES]
    if unknown or not pols:
        raise BadRequest(f"unknown policy {', '.join(unknown) or '(none)'}; known: {', '.join(POLICY_NAMES)}")
    return pols


def _knn_k(value: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in _split_csv(value) or ["20"])
    except ValueError:
        raise BadRequest(f"--knn-k wants comma-separated integers, got {value!r}") from None
    if min(ks) < 1:
        raise BadRequest("--knn-k values must be >= 1")
    return ks


def _heads(value: str) -> tuple[str, ...]:
    head_list = tuple(_split_csv(value) or ())
    bad_heads = [h for h in head_list if h not in QUALITY_HEADS]
    if bad_heads:
        raise BadRequest(f"unknown quality head {', '.join(bad_heads)}; known: {', '.join(QUALITY_HEADS)}")
    return head_list


def _load_split(
    data: list[Path],
    train_data: list[Path] | None,
    fmt: str,
    models: str | None,
    prices: Path | None,
    limit: int | None,
    strict: bool,
    train_split: float,
    seed: int,
) -> tuple[OutcomeMatrix, OutcomeMatrix, OutcomeMatrix]:
    """(everything --data holds, the training part, the test part): --train-data when given, else a
    seeded split of --data."""
    from eval.outcomes import load_outcomes, load_prices

    table = None if prices is None else load_prices("generic", prices)
    mat = load_outcomes(
        [str(p) for p in data], fmt, models=_split_csv(models), limit=limit, strict=strict, prices=table
    )
    _report_issues(mat, "data")
    if train_data:
        train = load_outcomes(
            [str(p) for p in train_data], fmt, models=list(mat.models), strict=strict, prices=table
        )
        _report_issues(train, "train data")
        test = mat
    else:
        train, test = mat.split(train_split, seed)
    _log(f"{fmt}: {mat.m} models; {train.n} training and {test.n} test queries")
    return mat, train, test


def routing(
    data: Annotated[list[Path], typer.Option("--data", help="data file(s) or folder(s); repeatable")],
    fmt: Annotated[
        str, typer.Option("--format", help="routerbench | mmlu-pro | routerdc | alpaca-eval | jsonl | csv")
    ],
    models: Annotated[
        str | None, typer.Option("--models", help="comma-separated models (default: all)")
    ] = None,
    policies: Annotated[str, typer.Option("--policies", help="comma-separated policies")] = ",".join(
        POLICY_NAMES
    ),
    heads: Annotated[
        str,
        typer.Option(
            "--heads", help=f"quality head methods to train and report ({','.join(QUALITY_HEADS)}; '' = none)"
        ),
    ] = ",".join(QUALITY_HEADS),
    prices: Annotated[
        Path | None, typer.Option("--prices", help="price table YAML for token-only outcomes (jsonl/csv)")
    ] = None,
    train_split: Annotated[float, typer.Option("--train-split", help="training share of the data")] = 0.7,
    train_data: Annotated[
        list[Path] | None,
        typer.Option("--train-data", help="separate training data (same format); then --data is all test"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    limit: Annotated[int | None, typer.Option("--limit", help="use the first N queries")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="write index.html + report.md here")] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="embed with Ray Data")] = False,
    multi: Annotated[
        str, typer.Option("--multi", help="quality of a multi-expert answer: mean | max")
    ] = "mean",
    classifier: Annotated[str, typer.Option("--classifier", help="hybrid | embedding | tfidf")] = "hybrid",
    embedder: Annotated[str, typer.Option("--embedder", help="sentence-transformers model")] = "default",
    knn_k: Annotated[
        str, typer.Option("--knn-k", help="neighbour counts the kNN quality head chooses from (out of fold)")
    ] = "10,20,50,100",
    strict: Annotated[bool, typer.Option("--strict", help="fail on the first malformed row")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Replay every routing policy over an outcome matrix: quality–cost curves, APGR, AIQ, baselines."""
    from eval.routing.replay import RoutingEvalConfig, evaluate_routing

    pols = _policies(policies)
    if limit is not None and limit < 2:
        raise BadRequest("--limit must be at least 2")
    ks = _knn_k(knn_k)
    head_list = _heads(heads)
    mat, train, test = _load_split(data, train_data, fmt, models, prices, limit, strict, train_split, seed)
    config = RoutingEvalConfig(
        policies=pols,
        train_split=train_split,
        seed=seed,
        multi=multi,
        classifier_kind=classifier,
        knn_k=ks,
        heads=head_list,
    )
    embed = None
    if classifier != "tfidf" or head_list:
        from eval.training.embedding import embed_texts

        def embed(texts: Sequence[str]) -> Any:
            return embed_texts(list(texts), embedder, use_ray=use_ray, progress=not quiet)

    result = evaluate_routing(train, test, config, embed=embed, progress=not quiet).with_input(
        fmt, [str(p) for p in data], [str(i) for i in mat.issues][:1000], len(mat.issues)
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=1))
        _log(f"wrote {json_out}")
    if report is not None:
        from eval.routing.report import write_report

        _log(f"wrote {write_report(result, report)}")
    _print_summary(result)


def _print_summary(result: RoutingResult) -> None:
    ref = result.reference
    typer.echo(f"weak = {ref.weak}, strong = {ref.strong}")
    if result.quality_head is not None:
        typer.echo(f"quality head chosen by validation APGR: {result.quality_head.chosen}")
    typer.echo(f"{'router':<20}{'APGR':>8}{'AIQ':>8}{'CPT50':>8}{'CPT80':>8}{'Q@20%':>8}  {'share→95%':>10}")
    for name, pol in result.policies.items():
        typer.echo(
            f"{name:<20}{_f(pol.apgr):>8}{_f(pol.aiq):>8}{_f(pol.cpt50):>8}{_f(pol.cpt80):>8}"
            f"{_f(pol.quality_at_20pct_strong_cost):>8}  {_f(pol.strong_share_to_95):>10}"
        )
    bl = result.baselines
    for name, b in (("oracle", bl.oracle), ("best_single", bl.best_single), ("random", bl.random)):
        typer.echo(f"{name:<20}{_f(b.apgr):>8}{_f(b.aiq):>8}")


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def live(
    data: Annotated[Path, typer.Option("--data", help="questions with references")],
    fmt: Annotated[str, typer.Option("--format", help="mmlu-pro | gsm8k | jsonl")],
    limit: Annotated[int, typer.Option("--limit", help="number of questions")] = 20,
    url: Annotated[str, typer.Option("--url", help="the service's root URL")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="COE_API_KEY", help="API key (or COE_API_KEY)")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency")] = 8,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 512,
    json_out: Annotated[Path | None, typer.Option("--json", help="write per-query outcomes here")] = None,
) -> None:
    """Send questions through a running service (route, then each expert's group) and score the answers."""
    import asyncio

    from eval.routing.live import load_live, run_live, summarise

    items = load_live(data, fmt, limit)
    if not items:
        raise BadRequest(f"no questions in {data}")
    outcomes = asyncio.run(
        run_live(
            items,
            url=url,
            api_key=api_key,
            concurrency=concurrency,
            max_tokens=max_tokens,
            progress=sys.stderr.isatty(),
        )
    )
    summary = summarise(outcomes)
    if json_out is not None:
        rows = [
            {
                "expert": o.expert,
                "category": o.item.category,
                "reference": o.item.reference,
                "predicted": o.predicted,
                "correct": o.correct,
                "error": o.error,
            }
            for o in outcomes
        ]
        json_out.write_text(json.dumps({"summary": summary, "outcomes": rows}, indent=1))
    o = summary["overall"]
    typer.echo(f"overall: {o['correct']}/{o['n']} correct ({_f(o['accuracy'])}), {o['errors']} errors")
    for title, key in (("expert", "per_expert"), ("category", "per_category")):
        typer.echo(f"{title:<28}{'n':>6}{'accuracy':>10}{'errors':>8}")
        for name, v in summary[key].items():
            typer.echo(f"{name[:27]:<28}{v['n']:>6}{_f(v['accuracy']):>10}{v['errors']:>8}")


def profile(
    ctx: typer.Context,
    from_eval: Annotated[
        Path | None, typer.Option("--from-eval", help="a `coe eval routing --json` result")
    ] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="MODEL=EXPERT (repeatable)")] = None,
    source: Annotated[str, typer.Option("--source", help="source label stored with the scores")] = "",
    only_mapped: Annotated[bool, typer.Option("--only-mapped", help="write only the --map models")] = False,
    create_categories: Annotated[
        bool, typer.Option("--create-categories", help="add categories the registry lacks")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print what was written as JSON")] = False,
    from_feedback: Annotated[
        bool, typer.Option("--from-feedback", help="Bayesian update from the decision log's feedback")
    ] = False,
    prior_strength: Annotated[
        float | None, typer.Option("--prior-strength", help="--from-feedback: pseudo-count of the prior")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="--from-feedback: show, write nothing")] = False,
) -> None:
    """Write per-expert per-category skill scores measured offline (--from-eval) or updated from
    clients' feedback (--from-feedback) into the registry."""
    if from_feedback:
        from registry.cli import profile_from_feedback

        profile_from_feedback(ctx, prior_strength, dry_run, as_json)
        return
    if from_eval is None:
        raise BadRequest("give --from-eval FILE or --from-feedback")
    from eval.routing.profile import apply_profiles, parse_map, plan, read_profiles
    from registry import Registry

    scores, counts = read_profiles(from_eval)
    writes = plan(scores, counts, parse_map(mapping or []), only_mapped=only_mapped)
    label = source or f"eval:{from_eval.name}"
    with Registry(command_settings(ctx).database_url) as reg:
        revision = apply_profiles(reg, writes, source=label, create_categories=create_categories)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "revision": revision,
                    "source": label,
                    "experts": {w.expert: dict(w.scores) for w in writes},
                },
                indent=1,
            )
        )
    else:
        typer.echo(
            f"wrote skill scores of {len(writes)} expert(s) "
            f"({sum(len(w.scores) for w in writes)} scores, source {label!r}); revision {revision}"
        )
