"""`coe eval sources`: the router's recipe held out by source (or, with --within, by fold of the real
sources' rows), right expert judged against the seeded registry. Heavy imports stay inside the command."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eval.commands.router import (
    CACHE_HELP,
    BalanceByOption,
    FinetuneOption,
    SourceBalanceOption,
    _embedder,
    _log,
)
from router.defaults import DEFAULT_ROUTER_ARTIFACT
from router.errors import BadRequest

if TYPE_CHECKING:
    from eval.classify.sources import HeldOut
    from eval.data.datasets import Example


def eval_sources(
    data: Annotated[Path, typer.Option("--data", help="the shared data folder (mix format)")],
    router_dir: Annotated[
        Path | None, typer.Option("--router", help="artifact for the latency figure (default: bundled)")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="report at this threshold (default: the best one)")
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="hybrid | embedding | tfidf")] = "hybrid",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results JSON here")] = None,
    embedder_model: Annotated[str, typer.Option("--embedder")] = "default",
    threads: Annotated[int, typer.Option("--threads")] = 0,
    cache: Annotated[Path | None, typer.Option("--cache", help=CACHE_HELP)] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    latency_samples: Annotated[int, typer.Option("--latency-samples")] = 100,
    weights: Annotated[
        list[float] | None,
        typer.Option(
            "--weight",
            help="also compare this embedding weight (repeatable): the outer mixture's where subjects nest",
        ),
    ] = None,
    max_per_source: Annotated[
        int | None,
        typer.Option("--max-per-source", help="a seeded sample of at most N prompts per source (CPU budget)"),
    ] = None,
    hold_out: Annotated[
        list[str] | None,
        typer.Option(
            "--hold-out",
            help="hold out only this source (repeatable; 'real' = the real-prompt sources); the eval-only "
            "sets are always tested",
        ),
    ] = None,
    within: Annotated[
        int,
        typer.Option(
            "--within",
            help="instead of whole sources, hold out each of K folds of the real-prompt sources' rows "
            "(Arena-Hard's by topic cluster): new prompts from sources the router trains on",
        ),
    ] = 0,
    finetune_layers: FinetuneOption = 0,
    source_balance: SourceBalanceOption = None,
    balance_by: BalanceByOption = "source",
) -> None:
    """Leave-one-source-out: per-source accuracy, confusion, right expert (seeded registry), fallback."""
    from eval.classify.classification import latency_ms
    from eval.classify.sources import check_folds, leave_one_source_out, within_folds
    from eval.data.mix import eval_only, families, load_mix, nest_sources, real_sources
    from eval.training.finetune import check_layers
    from eval.training.train import FALLBACK_THRESHOLD, KINDS, NESTED_WEIGHT, SUBJECT_WEIGHTS
    from router.core import Router

    if kind not in KINDS:
        raise BadRequest(f"unknown --kind {kind!r}; known: {', '.join(KINDS)}")
    if router_dir is None:
        router_dir = DEFAULT_ROUTER_ARTIFACT
    check_layers(finetune_layers)
    from eval.training.balance import check_balance

    power, groups = check_balance(source_balance, balance_by)
    if within and hold_out:
        raise BadRequest("--within and --hold-out: give one of them")
    if within:
        check_folds(within)
    examples = load_mix(data, seed=seed, with_eval_only=True)
    folds = {n for h in hold_out or () for n in (real_sources() - eval_only() if h == "real" else {h})}
    unknown = folds - {e.source for e in examples}
    if unknown:
        raise BadRequest(f"--hold-out {sorted(unknown)[0]!r}: not a source of the label map")
    if max_per_source is not None:
        examples = _sample_per_source(examples, max_per_source, seed)
    family, split = families(), None
    if within:
        split = within_folds(examples, within, real_sources() - eval_only(), family, groups)
        examples, family, folds, groups = (
            split.examples,
            split.family,
            set(split.hold_out),
            split.source_group,
        )
    fold_embed = None
    if finetune_layers > 0:
        from eval.classify.sources import eval_texts
        from eval.training.finetune import fold_embedder

        # each fold tunes its own encoder on its training rows (never on the source it holds out) and
        # embeds every prompt's text, then every pasted code (the service reads both)
        texts, codes = eval_texts(examples)
        extra = [c for c in codes if c]
        fold_embed = fold_embedder(
            texts + extra,
            [e.label for e in examples] + [""] * len(extra),
            finetune_layers,
            seed=seed,
            log=_log,
            sources=[e.source for e in examples] + [""] * len(extra),
            source_power=power,
            source_group=groups,
        )
        cache = None
    embedder = _embedder(embedder_model, threads, cache)
    rows = leave_one_source_out(
        examples,
        embedder.embed,
        kind=kind,
        seed=seed,
        test_only=eval_only(),
        weights=weights or (),
        log=_log,
        family=family,
        nest_sources=nest_sources(),
        fit_weights=SUBJECT_WEIGHTS,
        nested_weight=NESTED_WEIGHT,
        hold_out=frozenset(folds),
        fold_embed=fold_embed,
        source_power=power,
        source_group=groups,
        code_experts=_seeded_experts(sorted({e.label for e in examples})),
        code_threshold=FALLBACK_THRESHOLD,
    )
    if cache is not None:
        embedder.flush()
    if split is not None:
        rows = split.restore(rows)
    summary = _sources_summary(
        rows, sorted({e.label for e in examples}), threshold, real_sources() - eval_only()
    )
    router = Router.load(router_dir, embedder_model=embedder_model, threads=threads)
    summary["latency_ms"] = latency_ms(router, [e.text for e in examples[::97]], latency_samples)
    summary["router_version"] = router.version
    summary["finetune_layers"] = finetune_layers
    summary["source_power"] = power
    summary["balance_by"] = balance_by
    summary["within"] = within
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _print_sources(summary)


def _sample_per_source(examples: list[Example], n: int, seed: int) -> list[Example]:
    """A seeded sample of at most `n` examples of each source, sources in first-seen order."""
    from eval.data.datasets import sample

    sources = dict.fromkeys(e.source for e in examples)
    return [e for s in sources for e in sample([e for e in examples if e.source == s], n, seed)]


def _seeded_experts(cats: list[str]) -> dict[str, tuple[str, ...]]:
    """category -> experts of the registry `coe up` seeds for an artifact of categories `cats`."""
    from eval.training.seed import plan

    return {c: tuple(experts) for c, experts in plan(cats, "http://127.0.0.1:9/v1").mapping}


def _sources_summary(
    rows: Sequence[HeldOut], cats: list[str], threshold: float | None, real: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The leave-one-source-out summary, "right expert" judged against the seeded registry's map; with
    ensemble weights compared, one line per weight under `by_weight`."""
    from eval.classify.sources import by_weight, summarise
    from eval.training.seed import plan

    seeded = plan(cats, "http://127.0.0.1:9/v1")
    expert_of = {c: experts[0] for c, experts in seeded.mapping}
    generalist = next(e.name for e in seeded.experts if "generalist" in e.tags)
    groups = by_weight(rows)
    summary = summarise(groups.pop(-1.0), expert_of, generalist, threshold, choose_on=real)
    summary["by_weight"] = {
        str(w): {
            "mean_accuracy": round(
                sum(v["accuracy"] for v in s["per_source"].values()) / len(s["per_source"]), 4
            ),
            "per_source_accuracy": {k: v["accuracy"] for k, v in s["per_source"].items()},
            "best_threshold": s["best_threshold"],
            "mean_right_expert_at_best": s["mean_right_expert_by_threshold"][str(s["best_threshold"])],
        }
        for w, g in groups.items()
        for s in [summarise(g, expert_of, generalist, choose_on=real)]
    }
    return summary


def _print_sources(summary: dict[str, Any]) -> None:
    from eval.classify.sources import markdown

    typer.echo(markdown(summary), nl=False)
    for w, v in summary["by_weight"].items():
        typer.echo(
            f"embedding weight {w}: mean accuracy over sources {v['mean_accuracy']}, best threshold "
            f"{v['best_threshold']} (mean right expert {v['mean_right_expert_at_best']})"
        )
    lat = summary["latency_ms"]
    typer.echo(
        f"router {summary['router_version']}: single-query latency p50 {lat['p50']} ms, p99 {lat['p99']} ms"
    )
