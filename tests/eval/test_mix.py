"""The mixed training data (eval/data/mix.py + eval/data/label_map.yaml), a router built from a small slice
of each
source, `add-category` on top of it, and the leave-one-source-out summary. Reads ../shared/data."""

from __future__ import annotations

import functools
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eval.data.datasets import DataError, Example
from tests.router._shared import MMLU_ZIP, SHARED_DATA, default_embedder, embedder, needs_mmlu, needs_shared

pytestmark = [pytest.mark.shared_data, needs_shared, needs_mmlu]


@functools.cache
def slice_of_each_source(per_label: int = 8) -> tuple[Example, ...]:
    """Up to `per_label` rows per (source, label), MMLU-Pro from one model-output zip."""
    from eval.data.mix import load_label_map, load_source

    table = load_label_map()
    table["mmlu_pro"] = {**table["mmlu_pro"], "path": str(MMLU_ZIP.relative_to(SHARED_DATA))}
    out: list[Example] = []
    for name, spec in table.items():
        rows = load_source(name, spec, SHARED_DATA)
        random.Random(0).shuffle(rows)
        seen: Counter[str] = Counter()
        for e in rows:
            if seen[e.label] < per_label:
                seen[e.label] += 1
                out.append(e)
    return tuple(out)


def test_every_source_loads_with_mapped_labels() -> None:
    from eval.data.mix import eval_only, load_label_map

    exs = slice_of_each_source()
    assert {e.source for e in exs} == set(load_label_map())
    by_source = {s: {e.label for e in exs if e.source == s} for s in {e.source for e in exs}}
    assert by_source["gsm8k"] == {"math"} and by_source["humaneval"] == {"coding"}
    assert by_source["mt_bench"] == {"writing", "roleplay", "reasoning", "math", "coding", "extraction"}
    assert len(by_source["mmlu_pro"]) == 14 and by_source["ifeval"] == {"writing"}
    # labelled by what each prompt asks, not by the source: real prompts carry several intents
    for src in ("arena_hard", "arena_bench", "oasst", "koala", "alpaca_eval", "wizardlm", "self_instruct"):
        assert {"coding", "math", "chat"} <= by_source[src], src
    assert eval_only() == {"mbpp", "alpaca_eval", "codealpaca", "wizardlm", "self_instruct", "koala"}


def test_label_map_errors_are_one_line(tmp_path: Path) -> None:
    from eval.data.mix import load_mix

    bad = tmp_path / "map.yaml"
    bad.write_text(
        "sources:\n  mt_bench:\n    path: mt_bench/mt_bench_question.jsonl\n    labels: {writing: w}\n"
    )
    with pytest.raises(DataError, match="label 'roleplay' of source 'mt_bench' is not in the label map"):
        load_mix(SHARED_DATA, label_map=bad)
    bad.write_text("sources:\n  nope: {path: x, label: y}\n")
    with pytest.raises(DataError, match="unknown source 'nope'"):
        load_mix(SHARED_DATA, label_map=bad)


@pytest.fixture(scope="module")
def base_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A router trained on the slice with every coding prompt left out (add-category adds it back)."""
    from eval.data.mix import eval_only, nest_sources
    from eval.training.train import train_router

    out = tmp_path_factory.mktemp("mix") / "base"
    exs = [e for e in slice_of_each_source() if e.label != "coding" and e.source not in eval_only()]
    res = train_router(
        exs, out=out, embedder=embedder(), val_fraction=0.2, show_progress=False, nest_sources=nest_sources()
    )
    assert set(res.metrics["per_source"]) >= {"mmlu_pro", "gsm8k", "mt_bench", "vicuna", "arena_hard"}
    return out


def test_slice_builds_an_artifact_with_traffic_categories(base_artifact: Path) -> None:
    from router.classifier import load_artifact

    clf = load_artifact(base_artifact)
    assert {"writing", "chat", "reasoning", "extraction", "math", "law"} <= set(clf.categories)
    assert clf.reference is not None and (base_artifact / "reference.npz").is_file()
    # MMLU-Pro's own subjects nest; math (GSM8K and the chat sets label it too) stays outside
    assert clf.nested is not None and "law" in clf.nested.inner and "math" not in clf.nested.inner


def test_add_category_routes_paraphrases_and_keeps_other_predictions(
    base_artifact: Path, tmp_path: Path
) -> None:
    from eval.training.extend import add_category
    from router.classifier import load_artifact
    from router.text import routing_text

    humaneval = [e.text for e in slice_of_each_source(per_label=40) if e.source == "humaneval"]
    examples, paraphrases = humaneval[:15], humaneval[15:]
    res = add_category(base_artifact, "coding", examples, out=tmp_path / "ext", embedder=embedder())
    assert res.n_examples == 15 and res.reference_claimed < 0.02
    old, new = load_artifact(base_artifact), load_artifact(tmp_path / "ext")
    assert new.categories == (*old.categories, "coding")
    assert old.nested is not None and new.nested == old.nested  # the nested subjects stay
    para = [routing_text(t) for t in paraphrases]
    assert Counter(new.predict(para, embedder().embed(para)))["coding"] == len(para)
    # a fixed sample unlike the examples: maths word problems, exam questions, chat, writing (from the
    # benchmark sets: a real prompt labelled maths may paste code, which the coding examples rightly claim)
    assert_leaves_alone(
        old, new, ("mmlu_pro", "gsm8k", "gsm8k_test", "math500", "mt_bench", "vicuna", "ifeval")
    )


def test_add_category_on_the_bundled_artifact(tmp_path: Path) -> None:
    """`coe router add-category` keeps working on the rebuilt default: a category from 15 HumanEval
    prompts takes most of the other HumanEval prompts and leaves maths, writing and exam questions alone."""
    from eval.training.extend import add_category
    from router.classifier import load_artifact
    from router.defaults import DEFAULT_ROUTER_ARTIFACT
    from router.text import routing_text

    humaneval = [e.text for e in slice_of_each_source(per_label=60) if e.source == "humaneval"]
    own = default_embedder()  # the artifact's own encoder (its tuned layers, when it has them)
    res = add_category(DEFAULT_ROUTER_ARTIFACT, "pycode", humaneval[:15], out=tmp_path / "ext", embedder=own)
    assert res.n_examples == 15 and res.reference_claimed < 0.02
    old, new = load_artifact(DEFAULT_ROUTER_ARTIFACT), load_artifact(tmp_path / "ext")
    para = [routing_text(t) for t in humaneval[15:]]
    assert Counter(new.predict(para, own.embed(para)))["pycode"] >= 0.8 * len(para)
    assert_leaves_alone(old, new, ("mmlu_pro", "gsm8k", "math500", "mt_bench", "vicuna", "ifeval"), own)


def assert_leaves_alone(old: Any, new: Any, sources: tuple[str, ...], encoder: Any = None) -> None:
    """The extended artifact `new` decides as `old` on the maths, law, chat and writing rows of `sources`
    (embedded by `encoder`, the artifacts' own; the frozen test embedder by default)."""
    from router.text import routing_text

    unlike = [
        routing_text(e.text)
        for e in slice_of_each_source()
        if e.label in ("math", "law", "chat", "writing") and e.source in sources
    ]
    emb = (encoder or embedder()).embed(unlike)
    assert new.predict(unlike, emb) == old.predict(unlike, emb)


def test_leave_one_source_out_summary() -> None:
    from eval.classify.sources import HeldOut, summarise

    rows = [
        HeldOut("a", "coding", "coding", 0.9, True),
        HeldOut("a", "coding", "math", 0.3, True),
        HeldOut("b", "writing", "law", 0.6, True),
        HeldOut("b", "writing", "writing", 0.2, False),
    ]
    experts = {"coding": "code", "math": "math", "law": "humanities"}
    s = summarise(rows, experts, "general", threshold=0.5)
    assert s["per_source"]["a"] == {
        **s["per_source"]["a"],
        "accuracy": 0.5,
        "right_expert": 0.5,
        "fallback": 0.5,
    }
    # writing's right expert is the generalist: the low-confidence row reaches it by falling back
    assert s["per_source"]["b"]["right_expert"] == 0.5 and s["per_source"]["b"]["accuracy_seen_labels"] == 0.0
    assert s["best_threshold"] == 0.65 and s["confusion"]["labels"] == ["coding", "law", "math", "writing"]


def test_right_expert_by_label_splits_a_source_by_intent() -> None:
    from eval.classify.sources import HeldOut, markdown, summarise

    rows = [
        HeldOut("mt", "coding", "coding", 0.9, True),
        HeldOut("mt", "coding", "computer science", 0.9, True),  # the code expert owns both
        HeldOut("mt", "math", "business", 0.8, True),
        HeldOut("mt", "math", "math", 0.8, True),
        HeldOut("mt", "writing", "health", 0.8, True),
        HeldOut("mt", "writing", "health", 0.1, True),  # below the threshold: the generalist, rightly
    ]
    experts = {"coding": "code", "computer science": "code", "math": "math", "health": "medical"}
    s = summarise(rows, experts, "general", threshold=0.3)
    assert s["per_source"]["mt"]["by_label"] == {
        "coding": {"n": 2, "right_expert": 1.0, "fallback": 0.0},
        "math": {"n": 2, "right_expert": 0.5, "fallback": 0.0},
        "writing": {"n": 2, "right_expert": 0.5, "fallback": 0.5},
    }
    assert "| mt | coding | 2 | 1.000 | 0.000 |" in markdown(s)


def test_the_fallback_and_the_threshold_are_judged_on_the_expert() -> None:
    """Coding 0.3 + computer science 0.3 is 0.6 on the code expert: above 0.5, no fallback; on real
    prompts the threshold is chosen by the mean over intents with enough prompts, not over sources."""
    from eval.classify.sources import MIN_INTENT_N, HeldOut, summarise

    split = (("coding", 0.3), ("computer science", 0.3), ("chat", 0.25), ("math", 0.15))
    experts = {"coding": "code", "computer science": "code", "math": "math"}
    row = HeldOut("arena", "coding", "coding", 0.3, True, ranked=split)
    assert row.expert_confidence(experts) == 0.6
    s = summarise([row], experts, "general", threshold=0.5)
    assert s["per_source"]["arena"]["right_expert"] == 1.0 and s["per_source"]["arena"]["fallback"] == 0.0
    # source x: 20 coding prompts at 0.65 (right unless they fall back), 10 chat prompts read as chat and
    # 10 read as math at 0.7 (right only when they fall back); source y: 100 more of the latter. The mean
    # over sources would pick 0.75 (y all right, x half); over intents, 0.0 (coding all right, chat 10/120
    # against coding 0 at 0.75)
    coding = HeldOut("x", "coding", "coding", 0.65, True, ranked=(("coding", 0.65), ("chat", 0.35)))
    chat = HeldOut("x", "chat", "chat", 0.9, True, ranked=(("chat", 0.9), ("math", 0.1)))
    unsure = (("math", 0.7), ("chat", 0.3))
    rows = (
        [coding] * MIN_INTENT_N + [chat] * 10 + [HeldOut("x", "chat", "math", 0.7, True, ranked=unsure)] * 10
    )
    rows += [HeldOut("y", "chat", "math", 0.7, True, ranked=unsure)] * 100
    s = summarise(rows, experts, "general", choose_on=frozenset({"x", "y"}))
    assert s["mean_right_expert_by_threshold"]["0.75"] == 0.5 and s["best_threshold"] == 0.0
    assert s["by_intent_real_by_threshold"]["0.75"] == {"chat": 1.0, "coding": 0.0}
    assert "intents" in s["threshold_chosen_by"]


def test_humaneval_requests_are_the_docstring_descriptions_with_the_def_line() -> None:
    from eval.data.mix import humaneval_request, load_label_map, load_source

    rows = load_source("humaneval_nl", load_label_map()["humaneval_nl"], SHARED_DATA)
    assert len(rows) >= 160 and {e.label for e in rows} == {"coding"}
    for e in rows:
        desc, line = e.text.rsplit("\n\n", 1)
        assert line.startswith("def ") and ">>>" not in desc and len(desc) >= 20
    prompt = 'def f(x):\n    """Return x doubled, as an integer.\n    >>> f(2)\n    4\n    """\n'
    assert humaneval_request(prompt) == "Return x doubled, as an integer.\n\ndef f(x):"
    assert humaneval_request("def f(x):\n    pass\n") is None and humaneval_request("def (") is None


def test_drop_ids_leave_rows_out() -> None:
    from eval.data.mix import load_label_map, load_source

    spec = load_label_map()["alpaca_eval"]
    rows = load_source("alpaca_eval", {**spec, "drop_ids": []}, SHARED_DATA)
    kept = load_source("alpaca_eval", {**spec, "drop_ids": [0, 5]}, SHARED_DATA)
    assert len(kept) == len(rows) - 2 and {"alpaca_eval:0", "alpaca_eval:5"}.isdisjoint(e.id for e in kept)


def test_a_derived_source_is_held_out_with_its_origin() -> None:
    """The fold that tests on source a trains on neither a nor a_nl (derived from a)."""
    from eval.classify.sources import leave_one_source_out

    words = {"x": "alpha beta", "y": "gamma delta", "z": "epsilon zeta"}
    exs = [
        Example(f"{words[lab]} {i}", lab, f"{src}:{i}", source=src)
        for src, labs in (("a", "xy"), ("a_nl", "xy"), ("b", "yz"), ("c", "yz"))
        for i, lab in enumerate(labs * 10)
    ]
    rows = leave_one_source_out(
        exs, lambda t: None, kind="tfidf", family={"a": "a", "a_nl": "a", "b": "b", "c": "c"}
    )
    held_a = [r for r in rows if r.source in ("a", "a_nl")]
    assert len(held_a) == 40 and not any(r.seen for r in held_a if r.label == "x")


def test_held_out_prompts_with_pasted_code_are_read_as_the_service_reads_them() -> None:
    """`coe eval sources` measures the service: a held-out request whose instruction names no subject
    ("how do I fix it?") is classified by the code it pastes (router.core.code_to_read / read_code)."""
    from eval.classify.sources import eval_texts, leave_one_source_out

    code = "```\ndef mean(xs):\n    return sum(xs) / len(xs)\n```"
    train = [
        Example(f"how do I {w} it? {i}", "chat", f"a:{w}{i}", source="a")
        for w in ("do", "get")
        for i in range(8)
    ]
    train += [
        Example(f"def f{i}(xs):\n    return sum(xs) / len(xs)", "coding", f"b:{i}", source="b")
        for i in range(8)
    ]
    held = [Example(f"how do I fix it?\n{code}", "coding", "c:0", source="c")]
    assert eval_texts(held)[1][0] is not None and eval_texts(train)[1][0] is None
    experts = {"chat": ("general",), "coding": ("code",)}
    common = dict(kind="tfidf", family={"a": "a", "b": "b", "c": "c"}, hold_out=frozenset({"c"}))
    plain = [r for r in leave_one_source_out(train + held, lambda t: None, **common) if r.source == "c"]
    read = [
        r
        for r in leave_one_source_out(
            train + held, lambda t: None, code_experts=experts, code_threshold=0.6, **common
        )
        if r.source == "c"
    ]
    assert plain[0].pred == "chat" and read[0].pred == "coding"


def test_within_folds_keep_arena_hard_clusters_whole() -> None:
    """`coe eval sources --within 5` on the real sources: an Arena-Hard topic cluster's two prompts are
    tested in the same fold (never one trained on beside the other tested); the rest dealt row by row."""
    from eval.classify.sources import within_folds
    from eval.data.mix import families, load_label_map, load_source

    table = load_label_map()
    rows = [e for name in ("arena_hard", "arena_bench") for e in load_source(name, table[name], SHARED_DATA)]
    split = within_folds(rows, 5, frozenset({"arena_hard", "arena_bench"}), families())
    fold_of: dict[str, set[str]] = {}
    for e in split.examples:
        if split.origin[e.source] == "arena_hard":
            fold_of.setdefault(e.group, set()).add(e.source)
    assert len(fold_of) == 250 and all(len(f) == 1 for f in fold_of.values())
    sizes = Counter(split.family[e.source] for e in split.examples)
    assert len(sizes) == 5 and min(sizes.values()) > 0.1 * len(rows)


def test_cli_within_tests_each_real_prompt_once_under_its_source(tmp_path: Path) -> None:
    """`coe eval sources --within 2` end to end on the shared data (a small sample, TF-IDF only): every
    sampled real prompt is tested once, reported under its own source; the written sources are trained
    on in every fold and never tested; the evaluation-only sets are tested as always."""
    import json

    from tests.eval._cli import coe

    out = tmp_path / "within.json"
    args = ["--data", str(SHARED_DATA), "--within", "2", "--kind", "tfidf", "--max-per-source", "40"]
    proc = coe("eval", "sources", *args, "--latency-samples", "2", "--json", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads(out.read_text())
    assert s["within"] == 2
    real = {k: v["n"] for k, v in s["per_source"].items() if k in ("arena_hard", "arena_bench", "oasst")}
    assert real == {"arena_hard": 40, "arena_bench": 40, "oasst": 40}
    assert not {"gsm8k", "mmlu_pro", "ifeval"} & set(s["per_source"]) and "koala" in s["per_source"]
    assert not any("@" in k for k in s["per_source"])
    assert "within fold 0" in proc.stderr and "within fold 1" in proc.stderr
