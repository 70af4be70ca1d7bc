"""experts/answers.py: the one reading of a reply's answer, shared by `vote` and the live eval."""

from __future__ import annotations

import pytest

from experts.answers import extract_letter, extract_number, normalise_answer, normalise_number, stated_choice

REPLIES = [
    "The answer is (B).",
    "answer: c",
    "B) because it is",
    "Answer - option E",
    "Answer: A. Wait, the answer is B.",
    "A. Because of B",
    "I think it's (D)",
    "a cat",
    "Answer: 1,024 apples",
    "The answer is 12. Check: 12*2=24",
    "so 3 + 4 = 7\n#### 1,234",
    "answer is 5 #### 6",
    "3.14159265",
    "  Paris, France! ",
]


@pytest.mark.parametrize("text", REPLIES)
def test_vote_and_live_eval_read_the_same_answer(text):
    key = normalise_answer(text)
    kind, _, value = key.partition(":")
    if kind == "choice":
        assert extract_letter(text) == value
    elif kind == "num":
        assert extract_number(text) == value


def test_stated_choice_is_upper_case_and_explicit():
    assert stated_choice("Answer - option E") == "E"
    assert stated_choice("Answer: A. Wait, the answer is B.") == "A"  # the first stated answer
    assert stated_choice("The answer is Because") is None
    assert stated_choice("answer: c") is None and stated_choice("a cat") is None


def test_the_live_eval_also_reads_looser_forms_of_a_multiple_choice_reply():
    assert extract_letter("the answer is c") == "C"
    assert extract_letter("I think it's (D)") == "D"
    assert extract_letter("Option A is wrong, B is right") == "B"
    assert normalise_answer("I think it's (D)").startswith("text:")  # vote does not guess


def test_final_number():
    assert extract_number("answer is 5 #### 6") == "6"  # '####' marks the final answer
    assert extract_number("#### ") is None
    assert extract_number("The answer is 12. Check: 12*2=24") == "12"
    assert extract_number("no number") is None
    assert normalise_number("18.") == "18" and normalise_number("2.50") == "2.5"
    assert normalise_number("x") is None
    assert normalise_answer("1234567.5") == "num:1234567.5"  # no rounding: distinct numbers stay distinct
