"""`Router`: embedder + skill classifier + policies + load bias, the object the service holds; plus the
quality head (`router.quality`, None when the artifact has no `quality/` folder)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from router.balancer import LoadBias
from router.classifier import SkillClassifier, load_artifact
from router.defaults import DEFAULT_THRESHOLD, TOPICLESS_CATEGORIES
from router.embedder import Embedder, check_backend, make_embedder
from router.errors import ArtifactError
from router.policies import get_policy, ranked_categories
from router.quality import QualityHead, has_quality_head, load_quality_head
from router.text import code_text, routing_text
from router.tuned_encoder import TunedLayers, tuned_layers
from router.types import (
    READINGS,
    ExpertLoad,
    QualityEstimate,
    RegistrySnapshot,
    RouteDecision,
    RoutingOptions,
    expert_confidence,
)


def artifact_encoder(artifact_dir: str | Path) -> TunedLayers | None:
    """The artifact's fine-tuned encoder layers (None: its heads were fitted on the frozen model)."""
    m = load_artifact(artifact_dir).manifest
    return None if m is None else tuned_layers(artifact_dir, m.encoder)


def artifact_embedder(
    artifact_dir: str | Path,
    embedder_model: str = "default",
    backend: str = "torch",
    *,
    threads: int = 0,
    cache_dir: str | Path | None = None,
) -> Embedder:
    """The embedder an artifact's heads were fitted with: the bundled model, with the artifact's tuned
    layers when it has them (what add-category and the quality head must embed with)."""
    return make_embedder(
        embedder_model, backend, threads=threads, cache_dir=cache_dir, tuned=artifact_encoder(artifact_dir)
    )


class Router:
    def __init__(
        self,
        classifier: SkillClassifier,
        embedder: Embedder | None,
        balancer: LoadBias | None = None,
        quality: QualityHead | None = None,
    ) -> None:
        if (classifier.needs_embeddings or quality is not None) and embedder is None:
            raise ValueError("this classifier or quality head needs an embedder")
        m = classifier.manifest
        if m is not None and m.encoder and embedder is not None and embedder.name != m.embedder_name:
            # heads fitted on a tuned encoder mean nothing over another one's vectors
            raise ArtifactError(
                f"router artifact {m.version} was fitted on its own encoder {m.embedder_name}, not "
                f"{embedder.name}: load it with Router.load or router.core.artifact_embedder"
            )
        self.classifier = classifier
        self.embedder = embedder
        self.balancer = balancer if balancer is not None else LoadBias()
        #: per-query quality predictions (router/quality.py), None when the artifact has no head
        self.quality = quality
        #: milliseconds spent in the last probabilities() call, per stage (for the decision's timings)
        self.last_timings_ms: dict[str, float] = {}
        #: the (n, d) embeddings of the last probabilities() call (None for classifiers without them);
        #: read in the same thread right after the call (the service's semantic cache uses them)
        self.last_embeddings: np.ndarray | None = None
        #: which reading gave each prompt of the last probabilities() call its probabilities (READINGS:
        #: "instruction", "pasted code", "instruction and pasted code"); read like last_embeddings
        self.last_readings: list[str] = []
        #: category -> experts of the last registry snapshot decided on: the reading of a vague prompt
        #: compares the confidence in the best category's *expert* (router.types.expert_confidence) with
        #: the threshold, as the category policy does; empty before the first decision (per category)
        self.category_experts: Mapping[str, Sequence[str]] = {}

    @classmethod
    def load(
        cls,
        artifact_dir: str | Path,
        embedder_model: str = "default",
        threads: int = 0,
        embedder: Embedder | None = None,
        backend: str = "torch",
        cache_dir: str | Path | None = None,
    ) -> Router:
        """Load an artifact and its embedder on `backend` (router.embedder.BACKENDS; the ONNX ones
        export into `cache_dir` on first use); ArtifactError when artifact and embedder do not fit.

        Any backend may serve any artifact: they compute the same model, so the check compares the
        embedding model and dimension, never the backend the manifest was validated with."""
        check_backend(backend)
        # validate the artifact before paying for the embedder
        classifier = load_artifact(artifact_dir)
        quality = load_quality_head(artifact_dir) if has_quality_head(artifact_dir) else None
        if (
            quality is not None
            and classifier.needs_embeddings
            and quality.embedder_dim != classifier.embedding_dim
        ):
            raise ArtifactError(
                f"router artifact {artifact_dir}: the quality head was trained on dim {quality.embedder_dim} "
                f"embeddings, the classifier on dim {classifier.embedding_dim}"
            )
        if embedder is None and (classifier.needs_embeddings or quality is not None):
            # an artifact with its own tuned encoder layers brings them (router/tuned_encoder.py)
            m = classifier.manifest
            tuned = tuned_layers(artifact_dir, m.encoder) if m is not None else None
            embedder = make_embedder(
                embedder_model, backend, threads=threads, cache_dir=cache_dir, tuned=tuned
            )
        if embedder is not None and classifier.needs_embeddings:
            m = classifier.manifest
            trained = f"{m.embedder_name if m else '?'} (dim {classifier.embedding_dim})"
            if classifier.embedding_dim != embedder.dim:
                raise ArtifactError(
                    f"router artifact {artifact_dir}: embedding dimension mismatch: trained with "
                    f"{trained}, the embedder {embedder.name} gives dim {embedder.dim}"
                )
            if m is not None and m.embedder_name != embedder.name:
                raise ArtifactError(
                    f"router artifact {artifact_dir}: embedding model mismatch: trained with {trained}, "
                    f"the embedder is {embedder.name}"
                )
        if embedder is not None and quality is not None and quality.embedder_dim != embedder.dim:
            raise ArtifactError(
                f"router artifact {artifact_dir}: quality head trained with {quality.embedder_name} "
                f"(dim {quality.embedder_dim}), the embedder {embedder.name} gives dim {embedder.dim}"
            )
        return cls(classifier, embedder, quality=quality)

    @property
    def version(self) -> str:
        return self.classifier.version

    @property
    def categories(self) -> tuple[str, ...]:
        return self.classifier.categories

    @property
    def threshold(self) -> float | None:
        """The fallback threshold the artifact was built with (manifest `routing.threshold`), if any."""
        m = self.classifier.manifest
        return None if m is None else m.threshold

    def probabilities(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """(n, C) P(category) for a batch of texts, columns in `categories` order; `embeddings`, when
        given, are those of `routing_text(t)` for each text (what `route` and the eval pass).

        A prompt with pasted code is classified by its instruction (router/text.py). When that names no
        subject (its best category is one of TOPICLESS_CATEGORIES: "my script crashes, how do I fix it?")
        the prompt is about what it pasted, and is classified by the code; when it is below the fallback
        threshold (the artifact's, else DEFAULT_THRESHOLD), by the mean of the instruction's and the
        code's probabilities."""
        raw = list(texts)
        texts = [routing_text(t) for t in raw]  # long prompts: the instruction first (router/text.py)
        t0 = time.perf_counter()
        emb = embeddings
        if emb is None and self.embedder is not None and self.classifier.needs_embeddings:
            emb = self.embedder.embed(texts)
        t1 = time.perf_counter()
        self.last_embeddings = emb
        probs = self.classifier.predict_proba(texts, emb)
        self.last_readings = [READINGS[0]] * len(raw)
        extra_embed = self._read_code(raw, probs)
        t3 = time.perf_counter()
        n = max(len(texts), 1)
        # per-query share of the batch (the service batches embedding calls)
        self.last_timings_ms = {
            "embed": round((t1 - t0 + extra_embed) * 1000 / n, 4),
            "classify": round((t3 - t1 - extra_embed) * 1000 / n, 4),
        }
        return probs

    def _read_code(self, raw: Sequence[str], probs: np.ndarray) -> float:
        """Read the pasted code of the prompts whose instruction names no subject (the code's
        probabilities replace theirs) or is too vague to route (averaged in), in place; returns the
        seconds spent embedding the code."""
        below = self.threshold if self.threshold is not None else DEFAULT_THRESHOLD
        todo, topicless = code_to_read(raw, probs, self.categories, self.category_experts, below)
        if not todo:
            return 0.0
        codes = [c for _, c in todo]
        t0 = time.perf_counter()
        emb = None
        if self.embedder is not None and self.classifier.needs_embeddings:
            emb = self.embedder.embed(codes)
        spent = time.perf_counter() - t0
        rows = read_code(probs, todo, topicless, self.classifier.predict_proba(codes, emb))
        for i in rows:
            self.last_readings[i] = READINGS[1] if topicless[i] else READINGS[2]
        return spent

    def estimates(
        self, texts: Sequence[str], embeddings: np.ndarray | None = None
    ) -> list[QualityEstimate] | None:
        """The quality head's per-query estimates (None without a head); embeds unless given them."""
        if self.quality is None:
            return None
        texts = list(texts)
        if embeddings is None:
            assert self.embedder is not None  # __init__ guarantees one with a quality head
            embeddings = self.embedder.embed(texts)
        return self.quality.estimates(texts, embeddings)

    def decide(
        self,
        probs_row: np.ndarray | Sequence[float],
        snapshot: RegistrySnapshot,
        load: Mapping[str, ExpertLoad],
        options: RoutingOptions,
        timings_ms: Mapping[str, float] | None = None,
        quality: QualityEstimate | None = None,
        reading: str = READINGS[0],
    ) -> RouteDecision:
        """One decision; `quality` is this query's QualityEstimate (from `estimates`), when there is one;
        `reading` which reading of the prompt gave `probs_row` (`last_readings`). The decision names the
        intent (the best category) and the reading that decided: "fallback" when the generalist answered
        for lack of confidence."""
        row = np.asarray(probs_row, dtype=np.float64).reshape(-1)
        if row.shape[0] != len(self.categories):
            raise ValueError(f"expected {len(self.categories)} probabilities, got {row.shape[0]}")
        if options.threshold is None and self.threshold is not None:
            options = replace(options, threshold=self.threshold)  # neither request nor settings set one
        self.category_experts = snapshot.category_experts
        if options.load_bias:
            self.balancer.update(load)
        policy = get_policy(options.policy, balancer=self.balancer, router_version=self.version)
        decision = policy.decide(
            list(zip(self.categories, row.tolist(), strict=True)), snapshot, load, options, quality
        )
        timings = dict(self.last_timings_ms if timings_ms is None else timings_ms)
        timings.update(decision.timings_ms)
        intent = self.categories[int(row.argmax())]
        return replace(
            decision, timings_ms=timings, intent=intent, reading=READINGS[3] if decision.fallback else reading
        )

    def route(
        self,
        texts: Sequence[str],
        snapshot: RegistrySnapshot,
        load: Mapping[str, ExpertLoad],
        options: RoutingOptions,
    ) -> list[RouteDecision]:
        texts = list(texts)
        emb, embed_ms = None, None
        if self.quality is not None and self.embedder is not None:
            t0 = time.perf_counter()
            # one embedding, of what the classifier reads, for the classifier and the quality head
            emb = self.embedder.embed([routing_text(t) for t in texts])
            embed_ms = round((time.perf_counter() - t0) * 1000 / max(len(texts), 1), 4)
        probs = self.probabilities(texts, emb)
        readings = list(self.last_readings)
        timings = dict(self.last_timings_ms)
        if embed_ms is not None:
            timings["embed"] = embed_ms
        ests: Sequence[QualityEstimate | None] = self.estimates(texts, emb) or [None] * len(texts)
        return [
            self.decide(row, snapshot, load, options, timings_ms=timings, quality=est, reading=how)
            for row, est, how in zip(probs, ests, readings, strict=True)
        ]


def code_to_read(
    raw: Sequence[str],
    probs: np.ndarray,
    categories: Sequence[str],
    category_experts: Mapping[str, Sequence[str]],
    threshold: float,
) -> tuple[list[tuple[int, str]], np.ndarray]:
    """The prompts (index, pasted code as the classifier reads it) whose code `Router.probabilities`
    reads, given their instruction's `probs`: those whose best category names no subject
    (TOPICLESS_CATEGORIES) or whose expert confidence is below `threshold`; and, per prompt, whether its
    instruction was topicless. Shared with `coe eval sources`, which measures the service's reading."""
    topicless = np.array([c in TOPICLESS_CATEGORIES for c in categories])[probs.argmax(axis=1)]
    ranked = [ranked_categories(list(zip(categories, r, strict=True))) for r in probs.tolist()]
    sure = [expert_confidence(cats, category_experts) for cats in ranked]
    vague = (np.array(sure) < threshold) | topicless
    return [(i, c) for i, t in enumerate(raw) if vague[i] and (c := code_text(t))], topicless


def read_code(
    probs: np.ndarray, todo: Sequence[tuple[int, str]], topicless: np.ndarray, code_probs: np.ndarray
) -> list[int]:
    """`probs` of the prompts `todo` (code_to_read) updated in place with their code's `code_probs`: the
    subject of a request that names none is what it pasted (replaced); a vague one is read half and half
    (averaged). Returns the rows changed."""
    rows = np.array([i for i, _ in todo], dtype=int)
    if len(rows):
        probs[rows] = np.where(topicless[rows, None], code_probs, (probs[rows] + code_probs) / 2.0)
    return rows.tolist()
