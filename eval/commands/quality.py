"""`coe router train --outcomes …` (a quality head into an artifact) and `coe router calibrate`
(the quality policy's default λ for a target strong-model share or budget). Heavy imports stay inside."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.defaults import DEFAULT_ROUTER_ARTIFACT, QUALITY_HEADS
from router.errors import BadRequest

if TYPE_CHECKING:
    from router.classifier import SkillClassifier


def _log(message: str) -> None:
    typer.echo(message, err=True)


def read_expert_map(pairs: Sequence[str], path: Path | None) -> dict[str, str]:
    """MODEL=EXPERT pairs and/or a YAML/JSON file {model: expert}; the pairs win."""
    out: dict[str, str] = {}
    if path is not None:
        import yaml

        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadRequest(f"cannot read expert map {path}: {exc}") from None
        if not isinstance(doc, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
        ):
            raise BadRequest(f"expert map {path} must be a mapping of model name to expert name")
        out.update(doc)
    for pair in pairs:
        model, sep, expert = pair.partition("=")
        if not sep or not model.strip() or not expert.strip():
            raise BadRequest(f"--map wants MODEL=EXPERT, got {pair!r}")
        out[model.strip()] = expert.strip()
    return out


def _embed(texts: Sequence[str], spec: str, quiet: bool, artifact: Path | None = None) -> tuple[Any, str]:
    """(embeddings, the embedder's name): an artifact with its own tuned encoder embeds with it (a
    quality head beside its heads reads the same vectors), else `spec` through eval's disk cache."""
    from eval.training.embedding import embed_local, embed_texts
    from router.core import artifact_encoder
    from router.embedder import make_embedder, resolve_model

    tuned = artifact_encoder(artifact) if artifact is not None else None
    if tuned is not None:
        embedder = make_embedder(spec, "torch", tuned=tuned)
        return embed_local(list(texts), progress=not quiet, embedder=embedder), embedder.name
    return embed_texts(list(texts), spec, progress=not quiet), resolve_model(spec)[1]


def train_quality(
    outcomes: Sequence[Path],
    fmt: str,
    out: Path | None,
    base: Path | None,
    *,
    models: str | None = None,
    heads: str = ",".join(QUALITY_HEADS),
    knn_k: Sequence[int] = (10, 20, 50, 100),
    seed: int = 0,
    mapping: Sequence[str] = (),
    expert_map_file: Path | None = None,
    embedder_model: str = "default",
    strict: bool = False,
    quiet: bool = False,
    as_json: bool = False,
) -> None:
    """Train a quality head on an outcome matrix and save it as `quality/` inside an artifact."""
    from eval.outcomes import load_outcomes
    from eval.training.quality_train import train_quality_head
    from router.quality import SCORERS

    methods = tuple(h.strip() for h in heads.split(",") if h.strip())
    bad = [h for h in methods if h not in SCORERS]
    if bad or not methods:
        raise BadRequest(f"unknown --heads {', '.join(bad) or '(none)'}; known: {', '.join(SCORERS)}")
    clf, target = _target_artifact(out, base)
    model_list = [m.strip() for m in models.split(",")] if models else None
    mat = load_outcomes([str(p) for p in outcomes], fmt, models=model_list, strict=strict)
    if mat.issues:
        _log(f"skipped {len(mat.issues)} malformed row(s):")
        for issue in mat.issues[:20]:
            _log(f"  {issue}")
    _log(f"{fmt}: {mat.n} queries, {mat.m} models")
    emb, embedder_name = _embed(mat.texts, embedder_model, quiet, target)
    if clf.needs_embeddings and clf.embedding_dim != emb.shape[1]:
        raise BadRequest(
            f"the base artifact's embedder has dim {clf.embedding_dim}, "
            f"{embedder_model!r} gives {emb.shape[1]}"
        )
    emap = read_expert_map(mapping, expert_map_file)
    unknown = [m for m in emap if m not in mat.models]
    if unknown:
        raise BadRequest(f"--map names unknown model(s) {', '.join(unknown)}; known: {', '.join(mat.models)}")
    result = train_quality_head(
        mat,
        emb,
        embedder_name=embedder_name,
        methods=methods,
        seed=seed,
        k=knn_k,
        expert_map=emap,
        source=f"{fmt}:{','.join(Path(p).name for p in outcomes)}",
        log=None if as_json else _log,
    )
    path = result.head.save(target)
    if as_json:
        typer.echo(json.dumps({"out": str(path), "chosen": result.chosen, "validation": result.validation}))
    else:
        v = result.validation[result.chosen]
        typer.echo(
            f"wrote {path}: quality head {result.chosen} over {mat.m} models "
            f"(out-of-fold APGR {v['apgr']:.4f}, Brier {v['brier']:.4f}, ECE {v['ece']:.4f})"
        )


def _target_artifact(out: Path | None, base: Path | None) -> tuple[SkillClassifier, Path]:
    """(the base artifact's classifier, the artifact the head goes into): --base (default: the bundled
    artifact) itself, or its copy without a quality head at --out."""
    from router.classifier import load_artifact
    from router.quality import QUALITY_DIR

    if out is None and base is None:
        raise BadRequest("give --out DIR (a new artifact) and/or --base ARTIFACT (add the head to it)")
    src = base if base is not None else DEFAULT_ROUTER_ARTIFACT
    clf = load_artifact(src)  # the head must sit beside a valid category artifact
    target = out if out is not None else src
    if target.resolve() != src.resolve():
        if target.exists() and any(target.iterdir()):
            raise BadRequest(f"--out {target} exists and is not empty")
        shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(QUALITY_DIR))
    return clf, target


def calibrate(
    artifact: Annotated[Path, typer.Argument(help="artifact directory with a quality/ head")],
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="calibration queries: an outcome file (any --format)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="format of --data (see coe eval routing)")] = "jsonl",
    strong_share: Annotated[
        float | None, typer.Option("--strong-share", help="share of queries for the strongest model")
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="mean predicted cost per query to stay within")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="use the first N queries")] = None,
    embedder_model: Annotated[str, typer.Option("--embedder")] = "default",
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Pick the quality policy's λ on calibration queries (RouteLLM-style) and store it as the default."""
    import numpy as np

    from eval.outcomes import load_outcomes
    from eval.training.quality_train import calibrate_lambda
    from router.quality import has_quality_head, load_quality_head, prompt_tokens, update_defaults

    if not has_quality_head(artifact):
        raise BadRequest(f"{artifact} has no quality head; train one with coe router train --outcomes")
    if not data:
        raise BadRequest("give --data: the calibration queries (their texts are used, not their outcomes)")
    head = load_quality_head(artifact)
    mat = load_outcomes([str(p) for p in data], fmt, limit=limit)
    emb, _ = _embed(mat.texts, embedder_model, quiet, artifact)
    res = calibrate_lambda(
        head,
        emb,
        np.array([prompt_tokens(t) for t in mat.texts]),
        strong_share=strong_share,
        budget_usd=budget_usd,
    )
    res["calibrated_on"] = f"{fmt}:{','.join(Path(p).name for p in data)}"
    update_defaults(artifact, {"lambda": res["lambda"], "calibration": res})
    if as_json:
        typer.echo(json.dumps(res))
    else:
        typer.echo(
            f"λ = {res['lambda']:.6g}: {res['strong_share']:.3f} of {res['n']} queries to "
            f"{res['strong_model']}, mean predicted cost ${res['mean_cost_usd']:.6f}/query; "
            f"stored in {artifact}/quality/manifest.json"
        )
