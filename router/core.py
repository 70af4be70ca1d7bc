"""`Router`: embedder + skill classifier + policies + load bias, the object the service holds."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from router.balancer import LoadBias
from router.classifier import SkillClassifier, load_artifact
from router.embedder import Embedder
from router.errors import ArtifactError
from router.policies import get_policy
from router.text import routing_text
from router.types import ExpertLoad, RegistrySnapshot, RouteDecision, RoutingOptions


class Router:
    def __init__(
        self, classifier: SkillClassifier, embedder: Embedder | None, balancer: LoadBias | None = None
    ) -> None:
        if classifier.needs_embeddings and embedder is None:
            raise ValueError("this classifier needs an embedder")
        self.classifier = classifier
        self.embedder = embedder
        self.balancer = balancer if balancer is not None else LoadBias()
        #: milliseconds spent in the last probabilities() call, per stage (for the decision's timings)
        self.last_timings_ms: dict[str, float] = {}

    @classmethod
    def load(
        cls,
        artifact_dir: str | Path,
        embedder_model: str = "default",
        threads: int = 0,
        embedder: Embedder | None = None,
    ) -> Router:
        """Load an artifact and its embedder; ArtifactError when they do not fit together."""
        # validate the artifact before paying for the embedder
        classifier = load_artifact(artifact_dir)
        if embedder is None and classifier.needs_embeddings:
            from router.embedder import SentenceTransformerEmbedder

            embedder = SentenceTransformerEmbedder(embedder_model, threads=threads)
        if embedder is not None and classifier.needs_embeddings and classifier.embedding_dim != embedder.dim:
            m = classifier.manifest
            raise ArtifactError(
                f"router artifact {artifact_dir}: embedding dimension mismatch: trained with "
                f"{m.embedder_name if m else '?'} (dim {classifier.embedding_dim}), the embedder "
                f"{embedder.name} gives dim {embedder.dim}"
            )
        return cls(classifier, embedder)

    @property
    def version(self) -> str:
        return self.classifier.version

    @property
    def categories(self) -> tuple[str, ...]:
        return self.classifier.categories

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) P(category) for a batch of texts, columns in `categories` order."""
        texts = [routing_text(t) for t in texts]  # long prompts: the instruction first (router/text.py)
        t0 = time.perf_counter()
        emb = (
            self.embedder.embed(texts)
            if (self.embedder is not None and self.classifier.needs_embeddings)
            else None
        )
        t1 = time.perf_counter()
        probs = self.classifier.predict_proba(texts, emb)
        t2 = time.perf_counter()
        n = max(len(texts), 1)
        # per-query share of the batch (the service batches embedding calls)
        self.last_timings_ms = {
            "embed": round((t1 - t0) * 1000 / n, 4),
            "classify": round((t2 - t1) * 1000 / n, 4),
        }
        return probs

    def decide(
        self,
        probs_row: np.ndarray | Sequence[float],
        snapshot: RegistrySnapshot,
        load: Mapping[str, ExpertLoad],
        options: RoutingOptions,
        timings_ms: Mapping[str, float] | None = None,
    ) -> RouteDecision:
        row = np.asarray(probs_row, dtype=np.float64).reshape(-1)
        if row.shape[0] != len(self.categories):
            raise ValueError(f"expected {len(self.categories)} probabilities, got {row.shape[0]}")
        if options.load_bias:
            self.balancer.update(load)
        policy = get_policy(options.policy, balancer=self.balancer, router_version=self.version)
        decision = policy.decide(
            list(zip(self.categories, row.tolist(), strict=True)), snapshot, load, options
        )
        timings = dict(self.last_timings_ms if timings_ms is None else timings_ms)
        timings.update(decision.timings_ms)
        return replace(decision, timings_ms=timings)

    def route(
        self,
        texts: Sequence[str],
        snapshot: RegistrySnapshot,
        load: Mapping[str, ExpertLoad],
        options: RoutingOptions,
    ) -> list[RouteDecision]:
        probs = self.probabilities(texts)
        timings = dict(self.last_timings_ms)
        return [self.decide(row, snapshot, load, options, timings_ms=timings) for row in probs]
