"""`coe router train`, `coe router info` and `coe eval router`. Heavy imports stay inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.defaults import DEFAULT_ROUTER_ARTIFACT, QUALITY_HEADS
from router.errors import BadRequest

if TYPE_CHECKING:
    from eval.data.datasets import Example
    from eval.training.train import TrainResult

FORMAT_HELP = (
    "mmlu-pro (model-output zip or folder of zips), mix (the shared data folder, eval/data/label_map.yaml), "
    "jsonl or csv"
)
EXAMPLES_HELP = "NAME=FILE: also train category NAME on FILE's prompts (one per line); repeatable"
CACHE_HELP = "keep embeddings in this folder, so a rerun embeds each text once"
FinetuneOption = Annotated[
    int,
    typer.Option(
        "--finetune-layers",
        help="fine-tune the bundled MiniLM's top K layers on the training labels first (0: frozen encoder)",
    ),
]
SourceBalanceOption = Annotated[
    float | None,
    typer.Option(
        "--source-balance",
        help="weigh the sources of each category more evenly: row weight (rows of the category / (sources x "
        "rows of its source)) ** P; 0 = every row alike (default: the shipped recipe's, 0.5)",
    ),
]
BalanceByOption = Annotated[
    str,
    typer.Option(
        "--balance-by",
        help="--source-balance over each source (default, the shipped recipe) or over two groups, real "
        "prompts and written sets ('real'; --format mix)",
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend", help="embedder backend: torch | onnx | onnx-int8 (ONNX exports to ~/.cache/coe-router)"
    ),
]


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _embedder(model: str, threads: int, cache: Path | None, backend: str = "torch") -> Any:
    from router.embedder import make_embedder

    embedder = make_embedder(model, backend, threads=threads)
    if cache is None:
        return embedder
    from eval.training.embedding import CachedEmbedder

    return CachedEmbedder(embedder, cache)


def _check_format(fmt: str) -> str:
    from eval.data.formats import FORMATS

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
    backend: BackendOption = "torch",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    with_options: Annotated[
        bool, typer.Option("--with-options", help="also train on question+options copies (mmlu-pro)")
    ] = False,
    examples_files: Annotated[list[str] | None, typer.Option("--examples", help=EXAMPLES_HELP)] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help=CACHE_HELP)] = None,
    embedding_weight: Annotated[
        float | None,
        typer.Option("--embedding-weight", help="ensemble weight of the embedding head (lexical: 1 - w)"),
    ] = None,
    nested_weight: Annotated[
        float | None,
        typer.Option(
            "--nested-weight",
            help="--format mix: embedding weight of the outer mixture over the nested exam subjects",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    finetune_layers: FinetuneOption = 0,
    source_balance: SourceBalanceOption = None,
    balance_by: BalanceByOption = "source",
    outcomes: Annotated[
        list[Path] | None,
        typer.Option("--outcomes", help="outcome data: train a quality head instead (see docs/eval.md)"),
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="--outcomes: the artifact to add the head to")
    ] = None,
    heads: Annotated[str, typer.Option("--heads", help="--outcomes: methods to try")] = ",".join(
        QUALITY_HEADS
    ),
    models: Annotated[str | None, typer.Option("--models", help="--outcomes: comma-separated models")] = None,
    mapping: Annotated[list[str] | None, typer.Option("--map", help="--outcomes: MODEL=EXPERT")] = None,
    expert_map: Annotated[
        Path | None, typer.Option("--expert-map", help="--outcomes: YAML/JSON {model: expert}")
    ] = None,
) -> None:
    """Train a router artifact (embedding + TF-IDF skill classifier) with a held-out validation split;
    with --outcomes, a quality head (quality/ in the artifact) from an outcome matrix instead."""
    if outcomes:
        from eval.commands.quality import train_quality

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
    from eval.training.train import KINDS, train_router
    from router.embedder import check_backend

    _check_format(fmt)
    check_backend(backend)
    if kind not in KINDS:
        raise BadRequest(f"unknown --kind {kind!r}; known: {', '.join(KINDS)}")
    from eval.training.finetune import check_layers

    if check_layers(finetune_layers) and embedder_model != "default":
        raise BadRequest("--finetune-layers tunes the bundled MiniLM only (--embedder default)")
    from eval.training.balance import check_balance

    power, groups = check_balance(source_balance, balance_by, fmt)
    weights = _ensemble_weights(embedding_weight, nested=fmt == "mix")
    examples, extra = _training_examples(
        data, fmt, text_field, label_field, limit, seed, examples_files or []
    )
    _log(f"loaded {len(examples)} examples from {data}")
    if nested_weight is not None and not 0.0 <= nested_weight <= 1.0:
        raise BadRequest("--nested-weight must be between 0 and 1")
    if finetune_layers:
        cache = None  # a tuned encoder embeds the training texts itself; the cache holds frozen vectors
    embedder = _embedder(embedder_model, threads, cache, backend)
    from eval.data.mix import licences, nest_sources
    from eval.training.train import NESTED_WEIGHT

    result = train_router(
        examples,
        out=out,
        embedder=embedder,
        val_fraction=val_fraction,
        kind=kind,
        seed=seed,
        with_options=with_options,
        show_progress=sys.stderr.isatty(),
        log=_log,
        source=f"{fmt}:{Path(data).name}" + "".join(f" +examples:{n}" for n in extra),
        weights=weights,
        nest_sources=nest_sources() if fmt == "mix" else frozenset(),
        nested_weight=NESTED_WEIGHT if nested_weight is None else nested_weight,
        licences=licences() if fmt == "mix" else None,
        finetune_layers=finetune_layers,
        source_power=power,
        source_group=groups,
    )
    if cache is not None:
        embedder.flush()
    _print_trained(result, as_json)


def _ensemble_weights(embedding_weight: float | None, nested: bool = False) -> tuple[float, float] | None:
    """(embedding head, lexical head) ensemble weights: --embedding-weight w gives (w, 1 - w); unset, the
    subject weights where the subjects nest (--format mix), else ENSEMBLE_WEIGHTS."""
    from eval.training.train import ENSEMBLE_WEIGHTS, SUBJECT_WEIGHTS

    if embedding_weight is not None and not 0.0 <= embedding_weight <= 1.0:
        raise BadRequest("--embedding-weight must be between 0 and 1")
    if embedding_weight is None:
        return SUBJECT_WEIGHTS if nested else ENSEMBLE_WEIGHTS
    return (embedding_weight, 1.0 - embedding_weight)


def _training_examples(
    data: Path,
    fmt: str,
    text_field: str,
    label_field: str,
    limit: int | None,
    seed: int,
    examples_files: list[str],
) -> tuple[list[Example], list[str]]:
    """The labelled examples of --data plus each --examples NAME=FILE's prompts, and those NAMEs."""
    from eval.data.datasets import load_example_file, parse_examples_option
    from eval.data.formats import load_examples

    extra = [parse_examples_option(v) for v in examples_files]
    examples = load_examples(
        data, fmt, text_field=text_field, label_field=label_field, limit=limit, seed=seed
    )
    for name, file in extra:
        examples += load_example_file(file, name)
    return examples, [name for name, _ in extra]


def _print_trained(result: TrainResult, as_json: bool) -> None:
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
        return
    m = result.metrics
    typer.echo(
        f"wrote {result.out} (version {result.version}): validation accuracy {m['accuracy']:.4f}, "
        f"macro-F1 {m['macro_f1']:.4f}, ECE {m['ece']:.4f} on {m['n']} held-out examples "
        f"(majority {m['majority_accuracy']:.4f})"
    )


def add_category(
    name: Annotated[str, typer.Argument(help="the new category")],
    examples_file: Annotated[
        Path, typer.Option("--examples", help="example prompts, one per line (10–50 is plenty)")
    ],
    out: Annotated[Path, typer.Option("--out", help="new artifact directory to write")],
    router_dir: Annotated[
        Path | None, typer.Option("--router", help="artifact to extend (default: the bundled one)")
    ] = None,
    embedder_model: Annotated[str, typer.Option("--embedder")] = "default",
    threads: Annotated[int, typer.Option("--threads")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Write a new artifact: an existing one plus a category learnt from example prompts (kNN head)."""
    from eval.data.datasets import load_example_file
    from eval.training.extend import add_category as extend

    if router_dir is None:
        router_dir = DEFAULT_ROUTER_ARTIFACT
    texts = [e.text for e in load_example_file(examples_file, name)]
    from router.core import artifact_embedder

    # the new head is fitted on the artifact's own encoder (its tuned layers, when it has them)
    embedder = artifact_embedder(router_dir, embedder_model, threads=threads)
    r = extend(router_dir, name, texts, out=out, embedder=embedder)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "out": str(r.out),
                    "version": r.version,
                    "category": r.category,
                    "n_examples": r.n_examples,
                    "example_recall_loo": r.example_recall,
                    "reference_claimed": r.reference_claimed,
                }
            )
        )
        return
    typer.echo(
        f"wrote {r.out} (version {r.version}): category {r.category!r} from {r.n_examples} examples; "
        f"leave-one-out recall {r.example_recall:.2f}, claims {r.reference_claimed:.1%} of the "
        "reference training prompts"
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
    backend: BackendOption = "torch",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    latency_samples: Annotated[
        int, typer.Option("--latency-samples", help="single-query calls timed for p50/p99")
    ] = 100,
) -> None:
    """Accuracy, macro-F1, per-category P/R, confusion, calibration, latency, and baselines."""
    from eval.classify.classification import evaluate_router
    from eval.data.formats import load_examples
    from router.core import Router

    _check_format(fmt)
    if router_dir is None:
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
    if json_out is not None:
        _write_json(result, json_out)
    if json_out is None or str(json_out) != "-":
        _print_router_eval(result)


def _write_json(result: dict[str, Any], json_out: Path) -> None:
    """The metrics JSON to a file, or to stdout for '-'."""
    text = json.dumps(result, indent=2)
    if str(json_out) == "-":
        typer.echo(text)
        return
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(text + "\n", encoding="utf-8")


def _print_router_eval(result: dict[str, Any]) -> None:
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
