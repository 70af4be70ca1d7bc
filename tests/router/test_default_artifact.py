"""The bundled default artifact (router/artifacts/default, `make router-artifact`): the recipe its
manifest records, the MMLU-Pro bar, its size, and the fallback threshold the service inherits from it."""

from __future__ import annotations

import json

import pytest

from tests.router._shared import DEFAULT_ARTIFACT, SHARED_DATA, embedder, needs_shared

MANIFEST = json.loads((DEFAULT_ARTIFACT / "manifest.json").read_text(encoding="utf-8"))
#: the MMLU-only router's accuracy on the same 1,203 held-out MMLU-Pro questions (docs/router.md)
MMLU_ONLY_ACCURACY = 0.8429


def test_manifest_records_the_recipe_and_the_fallback_threshold() -> None:
    from eval.train import FALLBACK_THRESHOLD, SUBJECT_WEIGHTS
    from router.classifier import load_artifact

    assert MANIFEST["model"]["weights"] == list(SUBJECT_WEIGHTS)
    assert MANIFEST["routing"]["threshold"] == FALLBACK_THRESHOLD and MANIFEST["routing"]["chosen_by"]
    assert load_artifact(DEFAULT_ARTIFACT).manifest.threshold == FALLBACK_THRESHOLD
    assert {"coding", "writing", "chat", "math"} <= set(MANIFEST["categories"])
    # the exam subjects nest under the outer mixture (docs/router.md "Nested subjects")
    from eval.train import NESTED_WEIGHT

    nested = MANIFEST["model"]["nested"]
    assert nested["weights"] == pytest.approx([NESTED_WEIGHT, 1 - NESTED_WEIGHT])
    assert len(nested["inner"]) == 13 and "math" not in nested["inner"] and "law" in nested["inner"]
    assert load_artifact(DEFAULT_ARTIFACT).nested is not None


def test_mmlu_pro_held_out_accuracy_within_one_point_and_small() -> None:
    assert MANIFEST["metrics"]["per_source"]["mmlu_pro"]["n"] == 1203
    assert MANIFEST["metrics"]["per_source"]["mmlu_pro"]["accuracy"] >= MMLU_ONLY_ACCURACY - 0.01
    size = sum(f.stat().st_size for f in DEFAULT_ARTIFACT.iterdir() if f.is_file())
    assert size < 6_000_000


@pytest.mark.shared_data
@needs_shared
def test_mbpp_requests_it_never_trained_on_reach_the_coding_categories() -> None:
    """MBPP is evaluation-only (never in the training mix): 40 of its one-line requests, read as the
    service reads them, land on the categories the seeded registry gives the code expert."""
    from eval.mix import load_label_map, load_source
    from router.classifier import load_artifact
    from router.core import Router

    rows = load_source("mbpp", load_label_map()["mbpp"], SHARED_DATA)[:40]
    router = Router(load_artifact(DEFAULT_ARTIFACT), embedder())
    probs = router.probabilities([e.text for e in rows])
    cats = [router.categories[i] for i in probs.argmax(axis=1)]
    assert sum(c in ("coding", "computer science") for c in cats) >= 34, cats
