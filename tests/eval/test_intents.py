"""Intent labels by what a prompt asks (eval/data/intents.py, eval/data/arena_clusters.yaml,
eval/data/intent_labels.yaml)
and the licence rule of the training mix. Reads ../shared/data where a test needs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.data.datasets import DataError, Example
from tests.router._shared import SHARED_DATA, needs_shared


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("How do I center a div vertically and horizontally in CSS?", "coding"),
        ("Write a bash script for automating rclone backups", "coding"),
        ("My script crashes:\n```\nTraceback (most recent call last):\n```", "coding"),
        ("Prove that $\\sqrt{2}$ is irrational.", "math"),
        ("Find the remainder when 2^100 is divided by 7.", "math"),
        ("I want you to act as a travel guide. I will tell you my location.", "roleplay"),
        ("Summarize the following article in three bullet points.", "extraction"),
        ("Write a short poem about the sea at night.", "writing"),
        ("Can you create a short YouTube script for a video about how AI is changing everything?", "writing"),
        ("Write an original script for a science fiction TV show pilot.", "writing"),
        ("My patient has a fever of 39C and a stiff neck. What should I consider?", None),
        ("What are some good resources when trying to learn Russian?", None),
        # template placeholders are not LaTeX
        ("Act as a project manager. ${startDate}: the start date. ${budget}: the budget.", "roleplay"),
        # nor are prices, and a proof reader, "differentiate between" or "react" ask for no maths or code
        # (real prompts the maths and coding rules once claimed: Arena-Bench, Open-Assistant, Koala)
        ("Give me a business plan to earn 1000$ from 10$ that i have in my pocket in 30 days", None),
        (
            "Customer is ready to pay $13 for my product but the invoice must be $20. Write an email",
            None,
        ),
        ("I want you to act as a proof reader. I will provide you with text in english.", "roleplay"),
        ("Differentiate between the tsundere, yandere, kuudere and dandere personalities.", None),
        ("Why do isotopes of a element react the same chemically when they have different masses?", None),
        ("Interpret the poem. Provide a thesis for interpretation and prove it.", "writing"),
        ("Using LaTeX, evaluate $\\int_C r\\, ds$ where $C(s)$ is a line.", "math"),
        ("Prove that there are infinitely many primes.", "math"),
        (
            "Mick pays his teacher $800 for 40 lessons worth 2 hours each. How much does one hour cost?",
            "math",
        ),
        ("How do I fix this React component that renders twice?", "coding"),
    ],
)
def test_rules_claim_plain_intents_and_leave_the_rest(text: str, intent: str | None) -> None:
    from eval.data.intents import rule_intent

    assert rule_intent(text) == intent


def test_cluster_table_errors_are_one_line(tmp_path: Path) -> None:
    from eval.data.intents import load_clusters, load_intent_labels

    bad = tmp_path / "c.yaml"
    bad.write_text("clusters:\n  Some Cluster: poetry\n")
    with pytest.raises(DataError, match="unknown intents \\['poetry'\\]"):
        load_clusters(bad)
    bad.write_text("nothing: here\n")
    with pytest.raises(DataError, match="no 'clusters' table"):
        load_clusters(bad)
    bad.write_text("oasst:\n  '1': chat\n")
    with pytest.raises(DataError, match="expected source -> id -> \\[intent, P\\]"):
        load_intent_labels(bad)


def test_teacher_calls_below_the_floor_are_not_used(tmp_path: Path) -> None:
    from eval.data.intents import load_intent_labels

    f = tmp_path / "t.yaml"
    f.write_text('arena_bench:\n  "a": ["coding", 0.91]\n  "b": ["math", 0.52]\n')
    assert load_intent_labels(f) == {"arena_bench": {"a": "coding"}}
    assert load_intent_labels(f, min_p=0.5) == {"arena_bench": {"a": "coding", "b": "math"}}


@needs_shared
def test_every_arena_cluster_and_override_is_in_the_table() -> None:
    from eval.data.intents import load_clusters

    rows = [json.loads(line) for line in (SHARED_DATA / "arena_hard_v0.1" / "question.jsonl").open()]
    clusters, overrides = load_clusters()
    assert set(clusters) == {r["cluster"] for r in rows} and len(clusters) == 250
    assert set(overrides) <= {r["uid"] for r in rows}
    # the issue's table: a real coding, maths and writing cluster
    assert clusters["CSS Flexbox & Bootstrap Layouts"] == "coding"
    assert clusters["Proving Square Root Irrationality"] == "math"
    assert clusters["Word Count Responses"] == "writing"


@needs_shared
def test_teacher_labels_only_the_sources_that_ask_for_it() -> None:
    from eval.data.intents import load_intent_labels
    from eval.data.mix import load_label_map, load_source

    table = load_label_map()
    calls = load_intent_labels()
    assert set(calls) >= {"arena_bench"}
    bench = {
        e.id.split(":", 1)[1]: e.label for e in load_source("arena_bench", table["arena_bench"], SHARED_DATA)
    }
    assert calls["arena_bench"] and all(bench[rid] == lab for rid, lab in calls["arena_bench"].items())
    # oasst: the audit found the teacher right too rarely, so a row no rule claims is chat
    assert not table["oasst"]["intents"].get("teacher")
    oasst = load_source("oasst", table["oasst"], SHARED_DATA)
    assert {e.label for e in oasst} <= {"coding", "math", "writing", "roleplay", "extraction", "chat"}


def test_training_sources_carry_no_non_commercial_or_eval_only_licence() -> None:
    from eval.data.mix import eval_only, licences

    never = eval_only()
    for name, licence in licences().items():
        if name not in never:
            assert "NC" not in licence and "evaluation only" not in licence, name
    assert {"alpaca_eval", "codealpaca", "wizardlm", "self_instruct", "koala", "mbpp"} <= never


def test_eval_only_sources_share_one_fold_and_the_threshold_comes_from_real_sources() -> None:
    from eval.classify.sources import EVAL_ONLY_FOLD, HeldOut, leave_one_source_out, summarise

    words = {"x": "alpha beta", "y": "gamma delta"}
    exs = [
        Example(f"{words[lab]} {i}", lab, f"{src}:{i}", source=src)
        for src in ("a", "b", "e1", "e2")
        for i, lab in enumerate("xy" * 10)
    ]
    logged: list[str] = []
    rows = leave_one_source_out(
        exs, lambda t: None, kind="tfidf", test_only=frozenset({"e1", "e2"}), log=logged.append, family={}
    )
    assert len(logged) == 3 and EVAL_ONLY_FOLD in logged[-1] and len(rows) == 80
    held = [
        HeldOut("real", "coding", "coding", 0.4, True),
        HeldOut("bench", "coding", "coding", 0.9, True),
        HeldOut("bench", "coding", "math", 0.35, True),
    ]
    experts = {"coding": "code", "math": "math"}
    # over the real source alone, any threshold above 0.4 loses its one right answer
    s = summarise(held, experts, "general", choose_on=frozenset({"real"}))
    assert s["threshold_sources"] == ["real"] and s["best_threshold"] <= 0.4
    assert s["by_intent_real"] == {"coding": {"n": 1, "right_expert": 1.0, "fallback": 0.0}}


def test_balance_groups_put_the_real_prompt_sources_together() -> None:
    """--source-balance over --format mix weighs real prompts against written sets (eval.data.mix)."""
    from eval.data.mix import balance_groups, real_sources

    groups = balance_groups()
    assert {s for s, g in groups.items() if g == "real"} == real_sources()
    assert groups["gsm8k"] == groups["humaneval"] == groups["mmlu_pro"] == "written"


def test_the_threshold_is_the_lowest_within_one_standard_error_of_the_best() -> None:
    """The real folds' mean over intents is flat near its best: the fallback threshold is the lowest one
    whose mean is within one binomial standard error of the best (eval.classify.sources.summarise)."""
    from eval.classify.sources import HeldOut, summarise

    coding = [HeldOut("real", "coding", "coding", 0.45 if i < 2 else 0.9, True) for i in range(20)]
    chat = [
        HeldOut("real", "chat", "coding" if i < 3 else "chat", 0.45 if i < 3 else 0.9, True)
        for i in range(20)
    ]
    s = summarise(
        coding + chat, {"coding": "code", "chat": "general"}, "general", choose_on=frozenset({"real"})
    )
    mean = s["mean_right_expert_by_threshold"]
    # no fallback: coding 20/20, chat 17/20 (0.925); from 0.5 on: coding 18/20, chat 20/20 (0.95, the best)
    assert s["best_threshold"] == 0.5 and mean["0.5"] == 0.95 and mean["0.0"] == 0.925
    assert s["mean_standard_error"] == round((0.9 * 0.1 / 20) ** 0.5 / 2, 4)  # chat's share is 1: no variance
    assert s["threshold"] == s["one_se_threshold"] == 0.0
    # a fixed threshold is still reported as asked
    assert (
        summarise(coding + chat, {"coding": "code"}, "general", 0.5, frozenset({"real"}))["threshold"] == 0.5
    )
