"""router/text.py: what the classifier reads of long and structured prompts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.data.long_prompts import LAYOUTS
from router.defaults import TOPICLESS_CATEGORIES
from router.text import MAX_CHARS, code_text, routing_text, split_prompt

SAMPLE = Path(__file__).with_name("data") / "long_prompts.jsonl"


def test_short_prompts_are_unchanged() -> None:
    for text in ("What is 12 times 7?", "Write a haiku about autumn.\nMake it sad.", "x" * MAX_CHARS):
        assert routing_text(text) == text


def test_fenced_code_is_cut_and_the_instruction_is_read() -> None:
    code = "\n".join(f"    total += values[{i}]" for i in range(300))
    text = f"```python\ndef f(values):\n{code}\n```\n\nWhy is this function slow?"
    parts = split_prompt(text)
    assert parts.instruction == "Why is this function slow?" and len(parts.blocks) == 1
    assert routing_text(text) == "Why is this function slow?"
    # nothing but code: the code is what there is to read
    only = routing_text(f"```python\ndef f(values):\n{code}\n```")
    assert only.startswith("def f(values):") and len(only) <= MAX_CHARS + 3


def test_unclosed_fence_and_long_prose() -> None:
    assert routing_text("Explain this:\n```\n" + "a = 1\n" * 500) == "Explain this:"
    long = "word " * 1000 + "Summarise the text above in one line."
    out = routing_text(long)
    assert len(out) <= MAX_CHARS + 3 and out.endswith("Summarise the text above in one line.")


FUNCTION = '''def mean(values):
    """The mean of a list."""
    total = 0
    for v in values:
        total += v
    return total / len(values)

print(mean([1, 2, 3]))'''

TRACEBACK = """Traceback (most recent call last):
  File "app.py", line 8, in <module>
    print(mean([]))
  File "app.py", line 6, in mean
    return total / len(values)
ZeroDivisionError: division by zero"""


@pytest.mark.parametrize("pasted", [FUNCTION, TRACEBACK, FUNCTION + "\n\n" + TRACEBACK])
@pytest.mark.parametrize("first", [True, False])
def test_code_pasted_without_fences_is_cut_too(pasted: str, first: bool) -> None:
    ask = "Why does this crash on an empty list, and how should I fix it?"
    text = f"{ask}\n\n{pasted}" if first else f"{pasted}\n\n{ask}"
    parts = split_prompt(text)
    assert parts.instruction == ask
    assert "\n\n".join(parts.blocks).split() == pasted.split()
    assert routing_text(text) == ask
    assert code_text(text) is not None and "return total / len(values)" in code_text(text)
    # nothing but code: read as the code, as with fences
    assert routing_text(pasted) == pasted


@pytest.mark.parametrize(
    "prose",
    [
        "Solve the system:\nx + y = 10\nx - y = 2\nWhat is x?",
        "Write a poem about the sea; make it rhyme.\nUse four stanzas;\nEnd each one with a question.",
        "Plan my week:\n  - Monday: gym\n  - Tuesday: read\n  - Wednesday: call mum",
        "Let x = 3.\nWhat is 2x?",
        # an MMLU-Pro question (1-space indented lines): the question after the code stays prose
        "Consider the code segment.\n int a = 1;\n int b = 2;\n a = a + b;\n Which value does a hold?",
    ],
)
def test_prose_is_not_taken_for_pasted_code(prose: str) -> None:
    parts = split_prompt(prose)
    assert parts.instruction.split("\n")[-1].strip() == prose.split("\n")[-1].strip()
    if "int a" not in prose:
        assert parts.blocks == () and routing_text(prose) == prose


@pytest.mark.skipif(not SAMPLE.is_file(), reason="no long-prompt sample")
def test_a_pasted_code_block_does_not_change_the_category() -> None:
    """Questions from the shared data with a real HumanEval function pasted before or after them, fenced
    or not (built by `python -m eval.data.long_prompts`): the instruction reading gives the bare question's
    category for every row, and so does the service for every question that names a subject confidently
    enough to route on its own. Below the threshold, or read as `chat` (a request that names no subject:
    with code pasted it is about the code), the service reads the code too (router/core.py)."""
    from router.classifier import load_artifact
    from router.core import Router
    from router.text import routing_text
    from tests.router._shared import DEFAULT_ARTIFACT, default_embedder

    router = Router(load_artifact(DEFAULT_ARTIFACT), default_embedder())
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    cats = router.categories
    bare_p = router.probabilities([r["bare"] for r in rows])
    bare = bare_p.argmax(axis=1)
    topicless = np.array([cats[i] in TOPICLESS_CATEGORIES for i in bare])
    confident = (bare_p.max(axis=1) >= router.threshold) & ~topicless
    assert confident.sum() >= len(rows) - 4  # the exemption below covers few rows (4 of 16 now)
    for layout in LAYOUTS:
        views = [routing_text(r[layout]) for r in rows]
        read = router.classifier.predict_proba(views, default_embedder().embed(views)).argmax(axis=1)
        assert (read == bare).all(), f"{layout}: the instruction reading changed"
        pasted = router.probabilities([r[layout] for r in rows]).argmax(axis=1)
        diff = [
            (r["id"], cats[a], cats[b])
            for r, a, b, c in zip(rows, bare, pasted, confident, strict=True)
            if c and a != b
        ]
        assert not diff, f"{layout}: {diff}"
        # a chat question with a function pasted under it is read with the function: the code expert's
        moved = [cats[b] for b, t in zip(pasted, topicless, strict=True) if t]
        assert all(c in ("coding", "computer science") for c in moved), f"{layout}: {moved}"
