"""`coe router add-category`: a new artifact = an existing one + a prototype head for a category given
by 10–50 example prompts (router/prototypes.py). Seconds on CPU: only the examples are embedded."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from router.classifier import ENCODER_FILE, Manifest, SkillClassifier, load_artifact
from router.embedder import Embedder
from router.errors import BadRequest, Conflict
from router.prototypes import fit_prototype_head
from router.text import routing_text


@dataclass(frozen=True, slots=True)
class ExtendResult:
    out: Path
    version: str
    category: str
    n_examples: int
    example_recall: float  # leave-one-out: share of the examples the new artifact routes to the category
    reference_claimed: float  # share of reference training prompts the new gate claims (>= 0.5)


def add_category(
    source: str | Path, name: str, examples: list[str], *, out: str | Path, embedder: Embedder
) -> ExtendResult:
    src, dst = Path(source).resolve(), Path(out).resolve()
    if src == dst:
        raise BadRequest("--out must be a new directory: artifacts are never changed in place")
    name = name.strip()
    if not name:
        raise BadRequest("the category name is empty")
    old = load_artifact(src, expected_dim=embedder.dim)
    m = old.manifest
    assert m is not None
    if old.embedding_head is not None and m.embedder_name != embedder.name:
        raise BadRequest(
            f"artifact {src} was fitted with the encoder {m.embedder_name}, not {embedder.name}: "
            "add-category embeds with the artifact's own encoder (router.core.artifact_embedder)"
        )
    if name in old.categories:
        raise Conflict(f"category {name!r} is already in the artifact {src}")
    if old.embedding_head is None:
        raise BadRequest(f"artifact {src} has no embedding head: add-category needs one")
    if old.reference is None:
        raise BadRequest(
            f"artifact {src} has no reference prompts (reference.npz): retrain it with this version"
        )
    if len(examples) < 3:
        raise BadRequest(f"add-category needs at least 3 example prompts, got {len(examples)}")
    texts = [routing_text(t) for t in examples]
    emb = embedder.embed(texts)
    ref = np.asarray(old.reference[0], dtype=np.float32)
    head = fit_prototype_head(name, emb, ref)
    new = SkillClassifier(
        old.base_categories,
        embedding_head=old.embedding_head,
        lexical=old.lexical,
        weights=old.weights,
        temperature=old.temperature,
        prototypes=(*old.prototypes, head),
        reference=old.reference,
        nested=old.nested,
    )
    # the reference prompts have no text; their embedding-only view is enough to see the gate's effect
    changed = float(np.mean(head.gate(ref) >= 0.5))
    recall = _loo_recall(head, emb)
    fp = hashlib.sha256((m.fingerprint + name + "\x1e".join(texts)).encode("utf-8")).hexdigest()
    now = datetime.now(UTC)
    training: dict[str, Any] = dict(m.training)
    training["added"] = [
        *training.get("added", []),
        {
            "category": name,
            "n_examples": len(texts),
            "from": m.version,
            "created_at": now.isoformat(timespec="seconds"),
        },
    ]
    metrics = dict(m.metrics)
    metrics[f"added:{name}"] = {
        "example_recall_loo": round(recall, 4),
        "reference_claimed": round(changed, 4),
    }
    manifest = Manifest(
        categories=new.categories,
        embedder_name=m.embedder_name,
        embedder_dim=m.embedder_dim,
        fingerprint=fp,
        version=f"{now:%Y%m%d}-{fp[:8]}",
        created_at=now.isoformat(timespec="seconds"),
        metrics=metrics,
        training=training,
        routing=m.routing,
        encoder=m.encoder,
    )
    if m.encoder:  # the tuned layers travel with the heads fitted on them
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / str(m.encoder.get("file", ENCODER_FILE)), dst / ENCODER_FILE)
    new.save(dst, manifest)
    load_artifact(dst, expected_dim=embedder.dim)  # what we wrote must load
    return ExtendResult(dst, manifest.version, name, len(texts), recall, changed)


def _loo_recall(head: Any, emb: np.ndarray) -> float:
    """Gate >= 0.5 on each example with that example left out of the head."""
    hits = 0
    for i in range(len(emb)):
        rest = np.delete(head.examples, i, axis=0)
        probe = type(head)(head.category, rest, min(head.k, len(rest)), head.slope, head.bias)
        hits += bool(probe.gate(emb[i : i + 1])[0] >= 0.5)
    return hits / max(len(emb), 1)
