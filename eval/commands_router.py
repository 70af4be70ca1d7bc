"""`coe router train`, `coe router info` and `coe eval router`. Heavy imports stay inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from router.errors import BadRequest

FORMAT_HELP = "mmlu-pro (model-output zip or folder of zips), jsonl or csv"


def _check_format(fmt: str) -> str:
    from eval.datasets import FORMATS

    if fmt not in FORMATS:
        raise BadRequest(f"unknown --format {fmt!r}; known formats: {', '.join(FORMATS)}")
    return fmt


def train(
    data: Annotated[Path | None, typer.Option("--data", help="training data file or folder")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="artifact directory to write")] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "mmlu-pro",
    text_field: Annotated[str, typer.Option("--text-field")] = "text",
    label_field: Annotated[str, typer.Option("--label-field")] = "label",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="held-out validation share")] = 0.1,
    limit: Annotated[int | None, typer.Option("--limit", help="train on a seeded random sample of N")] = None,
    kind: Annotated[str, typer.Option("--kind", help="hybrid | embedding | tfidf")] = "hybrid",
    embedder_model: Annotated[
        str, typer.Option("--embedder", help="sentence-transformers model")
    ] = "default",
    threads: Annotated[int, typer.Option("--threads", help="torch threads (0 = min(cores, 4))")] = 0,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="embedder backend: torch | onnx | onnx-int8 (ONNX exports to ~/.cache/coe-router)",
        ),
    ] = "torch",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    with_options: Annotated[
        bool, typer.Option("--with-options", help="also train on question+options copies (mmlu-pro)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    outcomes: Annotated[
        list[Path] | None,
        typer.Option("--outcomes", help="outcome data: train a quality head instead (see docs/eval.md)"),
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="--outcomes: the artifact to add the head to")
    ] = None,
    heads: Annotated[str, typer.Option("--heads", help="--outcomes: methods to try")] = "knn,logreg,ensemble",
    models: Annotated[str | None, typer.Option("--models", help="--outcomes: comma-separated models")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="--outcomes: MODEL=EXPERT")] = None,
    expert_map: Annotated[
        Path | None, typer.Option("--expert-map", help="--outcomes: YAML/JSON {model: expert}")
    ] = None,
) -> None:
    """Train a router artifact (embedding + TF-IDF skill classifier) with a held-out validation split;
    with --outcomes, a quality head (quality/ in the artifact) from an outcome matrix instead."""
    if outcomes:
        from eval.commands_quality import train_quality

        return train_quality(
            outcomes,
            fmt,
            out,
            base,
            models=models,
            heads=heads,
            seed=seed,
            mapping=mapping or (),
            expert_map_file=expert_map,
            embedder_model=embedder_model,
            quiet=not sys.stderr.isatty(),
            as_json=as_json,
        )
    if data is None or out is None:
        raise BadRequest("coe router train needs --data and --out (or --outcomes for a quality head)")
    from eval.datasets import load_examples
    from eval.train import KINDS, train_router
    from router.embedder import check_backend, make_embedder

    _check_format(fmt)
    check_backend(backend)
    if kind not in KINDS:
        raise BadRequest(f"unknown --kind {kind!r}; known: {', '.join(KINDS)}")
    examples = load_examples(
        data, fmt, text_field=text_field, label_field=label_field, limit=limit, seed=seed
    )

    def log(message: str) -> None:
        typer.echo(message, err=True)

    log(f"loaded {len(examples)} examples from {data}")
    embedder = make_embedder(embedder_model, backend, threads=threads)
    result = train_router(
        examples,
        out=out,
        embedder=embedder,
        val_fraction=val_fraction,
        kind=kind,
        seed=seed,
        with_options=with_options,
        show_progress=sys.stderr.isatty(),
        log=log,
        source=f"{fmt}:{Path(data).name}",
    )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "out": str(result.out),
                    "version": result.version,
                    "n_train": result.n_train,
                    "n_val": result.n_val,
                    "metrics": result.metrics,
                }
            )
        )
    else:
        m = result.metrics
        typer.echo(
            f"wrote {result.out} (version {result.version}): validation accuracy {m['accuracy']:.4f}, "
            f"macro-F1 {m['macro_f1']:.4f}, ECE {m['ece']:.4f} on {m['n']} held-out examples "
            f"(majority {m['majority_accuracy']:.4f})"
        )


def info(
    artifact: Annotated[Path, typer.Argument(help="artifact directory")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show an artifact's manifest (validated)."""
    from router.classifier import MANIFEST, load_artifact

    clf = load_artifact(artifact)
    raw = json.loads((Path(artifact) / MANIFEST).read_text(encoding="utf-8"))
    if as_json:
        typer.echo(json.dumps(raw, indent=2))
        return
    m = raw.get("metrics", {})
    typer.echo(
        f"version {clf.version}  kind {clf.kind}  embedder {raw['embedder']['name']} "
        f"(dim {raw['embedder']['dim']})  created {raw['created_at']}"
    )
    typer.echo(f"categories ({len(clf.categories)}): {', '.join(clf.categories)}")
    if m:
        typer.echo(
            f"validation: accuracy {m.get('accuracy')}  macro-F1 {m.get('macro_f1')}  ECE {m.get('ece')}  "
            f"n {m.get('n')}"
        )
    from router.quality import has_quality_head, load_quality_head

    if has_quality_head(artifact):
        head = load_quality_head(artifact)
        v = head.metrics.get("validation", {}).get(head.method, {})
        typer.echo(
            f"quality head: {head.method} over {len(head.models)} models (strongest {head.strong_model}), "
            f"out-of-fold APGR {v.get('apgr')}, default λ {head.default_lambda}"
        )


def eval_router(
    data: Annotated[Path, typer.Option("--data", help="labelled eval data")],
    router_dir: Annotated[
        Path | None, typer.Option("--router", help="artifact (default: the bundled one)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "jsonl",
    text_field: Annotated[str, typer.Option("--text-field")] = "text",
    label_field: Annotated[str, typer.Option("--label-field")] = "label",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write metrics JSON here ('-' = stdout)")
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="write report.md + PNG plots here")] = None,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    baseline_data: Annotated[
        Path | None,
        typer.Option(
            "--baseline-data", help="fit the baselines on this data (default: 5-fold CV on the eval set)"
        ),
    ] = None,
    baseline_format: Annotated[str, typer.Option("--baseline-format")] = "mmlu-pro",
    embedder_model: Annotated[str, typer.Option("--embedder")] = "default",
    threads: Annotated[int, typer.Option("--threads")] = 0,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="embedder backend: torch | onnx | onnx-int8 (ONNX exports to ~/.cache/coe-router)",
        ),
    ] = "torch",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    latency_samples: Annotated[
        int, typer.Option("--latency-samples", help="single-query calls timed for p50/p99")
    ] = 100,
) -> None:
    """Accuracy, macro-F1, per-category P/R, confusion, calibration, latency, and baselines."""
    from eval.classification import evaluate_router
    from eval.datasets import load_examples
    from router.core import Router

    _check_format(fmt)
    if router_dir is None:
        from deploy.settings import DEFAULT_ROUTER_ARTIFACT

        router_dir = DEFAULT_ROUTER_ARTIFACT
    examples = load_examples(
        data, fmt, text_field=text_field, label_field=label_field, limit=limit, seed=seed
    )
    base = None
    if baseline_data is not None:
        _check_format(baseline_format)
        base = load_examples(baseline_data, baseline_format, text_field=text_field, label_field=label_field)
    router = Router.load(router_dir, embedder_model=embedder_model, threads=threads, backend=backend)
    result = evaluate_router(
        router,
        examples,
        baseline_train=base,
        report_dir=report,
        latency_n=latency_samples,
        show_progress=sys.stderr.isatty(),
    )
    summary: dict[str, Any] = {k: result[k] for k in ("router_version", "n", "accuracy", "macro_f1", "ece")}
    summary["latency_ms"] = result["latency_ms"]
    summary["baselines"] = result["baselines"]
    if json_out is not None:
        text = json.dumps(result, indent=2)
        if str(json_out) == "-":
            typer.echo(text)
        else:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(text + "\n", encoding="utf-8")
    if json_out is None or str(json_out) != "-":
        bl = result["baselines"]
        typer.echo(
            f"router {result['router_version']}: accuracy {result['accuracy']:.4f}, macro-F1 "
            f"{result['macro_f1']:.4f}, ECE {result['ece']:.4f}, n {result['n']}, latency p50 "
            f"{result['latency_ms']['p50']} ms p99 {result['latency_ms']['p99']} ms"
        )
        for name, v in bl.items():
            if isinstance(v, dict):
                typer.echo(f"  baseline {name}: accuracy {v['accuracy']:.4f}, macro-F1 {v['macro_f1']:.4f}")
        typer.echo(f"  (baselines fitted on: {bl['fitted_on']})")


def register(router_app: typer.Typer, eval_app: typer.Typer, experts_app: typer.Typer) -> None:
    router_app.command("train")(train)
    router_app.command("info")(info)
    eval_app.command("router")(eval_router)
