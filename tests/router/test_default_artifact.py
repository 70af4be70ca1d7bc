"""The bundled default artifact (router/artifacts/default, `make router-artifact`): the recipe its
manifest records, the MMLU-Pro bar, its size, and the fallback threshold the service inherits from it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.router._shared import DEFAULT_ARTIFACT, SHARED_DATA, default_embedder, needs_shared

MANIFEST = json.loads((DEFAULT_ARTIFACT / "manifest.json").read_text(encoding="utf-8"))
#: the MMLU-only router's accuracy on the same 1,203 held-out MMLU-Pro questions (docs/router.md)
MMLU_ONLY_ACCURACY = 0.8429


def test_manifest_records_the_recipe_and_the_fallback_threshold() -> None:
    from eval.training.train import FALLBACK_THRESHOLD, SUBJECT_WEIGHTS
    from router.classifier import load_artifact

    assert MANIFEST["model"]["weights"] == list(SUBJECT_WEIGHTS)
    assert MANIFEST["routing"]["threshold"] == FALLBACK_THRESHOLD and MANIFEST["routing"]["chosen_by"]
    assert load_artifact(DEFAULT_ARTIFACT).manifest.threshold == FALLBACK_THRESHOLD
    assert {"coding", "writing", "chat", "math"} <= set(MANIFEST["categories"])
    # the exam subjects nest under the outer mixture (docs/router.md "Nested subjects")
    from eval.training.train import NESTED_WEIGHT

    nested = MANIFEST["model"]["nested"]
    assert nested["weights"] == pytest.approx([NESTED_WEIGHT, 1 - NESTED_WEIGHT])
    assert len(nested["inner"]) == 13 and "math" not in nested["inner"] and "law" in nested["inner"]
    assert {"roleplay", "extraction", "reasoning"} <= set(MANIFEST["categories"])
    assert load_artifact(DEFAULT_ARTIFACT).nested is not None


def test_mmlu_pro_held_out_accuracy_within_one_point_and_small() -> None:
    assert MANIFEST["metrics"]["per_source"]["mmlu_pro"]["n"] == 1203
    assert MANIFEST["metrics"]["per_source"]["mmlu_pro"]["accuracy"] >= MMLU_ONLY_ACCURACY - 0.01
    size = sum(f.stat().st_size for f in DEFAULT_ARTIFACT.iterdir() if f.is_file())
    # 5.3 MB of heads, vocabularies and reference vectors + 6.6 MB of fine-tuned layers (encoder.npz)
    assert size < 12_500_000


@pytest.mark.shared_data
@needs_shared
def test_mbpp_requests_it_never_trained_on_reach_the_coding_categories() -> None:
    """MBPP is evaluation-only (never in the training mix): 40 of its one-line requests, read as the
    service reads them, land on the categories the seeded registry gives the code expert."""
    from eval.data.mix import load_label_map, load_source
    from router.classifier import load_artifact
    from router.core import Router

    rows = load_source("mbpp", load_label_map()["mbpp"], SHARED_DATA)[:40]
    router = Router(load_artifact(DEFAULT_ARTIFACT), default_embedder())
    probs = router.probabilities([e.text for e in rows])
    cats = [router.categories[i] for i in probs.argmax(axis=1)]
    assert sum(c in ("coding", "computer science") for c in cats) >= 34, cats


def test_manifest_lists_every_training_source_with_rows_and_a_licence_it_may_ship() -> None:
    """training.sources: the label map's training sources, each with its rows and licence; none is
    non-commercial (CC BY-NC) or evaluation-only (SOURCES.md: the artifact ships in an Apache-2.0 project)."""
    from eval.data.mix import eval_only, licences

    sources = MANIFEST["training"]["sources"]
    allowed = {name for name in licences() if name not in eval_only()}
    assert set(sources) == allowed and "alpaca_eval" not in sources
    for name, v in sources.items():
        assert v["rows"] > 0 and v["licence"] == licences()[name], name
        assert "NC" not in v["licence"] and "evaluation only" not in v["licence"], name
    assert (
        sum(v["rows"] for v in sources.values())
        == MANIFEST["training"]["n_train"] + MANIFEST["training"]["n_val"]
    )


#: issue 25's table: real requests and the expert of the seeded registry each must reach (the service
#: test is tests/deploy/test_e2e.py)
ISSUE_25 = [
    ("How do I center a div vertically and horizontally in CSS?", "local-code"),
    ("Prove that there are infinitely many primes.", "local-math"),
    ("Write a short poem about the sea at night.", "local-general"),
    ("My patient has a fever of 39C and a stiff neck. What should I consider?", "local-medical"),
]


def seeded_snapshot(categories: tuple[str, ...]) -> Any:
    """The registry `coe up` seeds for these categories (eval/training/seed.py), as a snapshot."""
    from eval.training.seed import plan
    from router.types import RegistrySnapshot

    p = plan(categories, "http://127.0.0.1:9/v1")
    return RegistrySnapshot(
        revision=1, experts={e.name: e for e in p.experts}, category_experts=dict(p.mapping)
    )


@pytest.mark.parametrize(("text", "expert"), ISSUE_25)
def test_real_requests_reach_the_expert_of_their_intent(text: str, expert: str) -> None:
    from router.classifier import load_artifact
    from router.core import Router
    from router.types import RoutingOptions

    router = Router(load_artifact(DEFAULT_ARTIFACT), default_embedder())
    probs = router.probabilities([text])
    (d,) = router.route([text], seeded_snapshot(router.categories), {}, RoutingOptions())
    assert d.expert_names[0] == expert and not d.fallback, (text, d.categories[:3])
    assert d.intent == router.categories[int(probs[0].argmax())] and d.reading == "instruction"


def test_the_decision_says_the_pasted_code_decided() -> None:
    """An instruction that names no subject above a traceback: the code decided, and the decision says so."""
    from router.classifier import load_artifact
    from router.core import Router
    from router.types import RoutingOptions

    router = Router(load_artifact(DEFAULT_ARTIFACT), default_embedder())
    pasted = (
        "import json\ndata = json.load(open('items.json'))\nprint(data['items'][0])\n\n"
        'Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n'
        "    print(data['items'][0])\nIndexError: list index out of range"
    )
    ask = "Any idea what is going on?"  # names no subject: read as chat alone
    texts = [ask, f"{ask}\n\n{pasted}", f"My script crashes, how do I fix it?\n\n{pasted}"]
    alone, with_code, named = router.route(texts, seeded_snapshot(router.categories), {}, RoutingOptions())
    assert alone.intent == "chat" and alone.reading in ("instruction", "fallback")
    assert with_code.reading == "pasted code"
    # an instruction that names its subject (a script) decides by itself
    assert named.reading == "instruction" and named.expert_names[0] == "local-code"
    assert with_code.intent in ("coding", "computer science") and with_code.expert_names[0] == "local-code"
