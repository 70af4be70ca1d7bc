"""What "the answer" of a reply is: one set of rules for `vote` (experts/aggregate.py), which compares the
experts' answers, and for the live evaluation (eval/routing/live.py), which scores them against references.

Two tiers, so the two always agree on what a reply states outright:
  stated_choice     the option letter the reply states: "the answer is (B)", "Answer: B", "Answer - option B",
                    or a reply that is just a letter or starts with one ("B", "(B)", "B) because ...").
                    Upper-case only: "answer: c" or "a cat" state no option.
  extract_letter    for a question known to be multiple choice (the live eval): `stated_choice`, else the
                    looser forms a model may use there: a lower-case letter after "answer is" / "answer:",
                    a line holding only a letter, "(X)" anywhere, else the last lone capital A-J.
  extract_number    the last number after the last "####" when the reply has one (GSM8K style), else the
                    first number after the word "answer", else the last number; normalised ("1,024" -> "1024",
                    "7.0" -> "7").
  normalise_answer  `vote`'s comparable key: "choice:B" (stated_choice), else "num:42" (extract_number), else
                    "text:<lower-cased words>".
"""

from __future__ import annotations

import re

#: the option letters a multiple-choice question may have (MMLU-Pro has ten)
LETTERS = "ABCDEFGHIJ"

_ANSWER_PHRASE = re.compile(
    r"(?i:answer)\s*(?:(?i:is)\s*)?[:\-]?\s*(?:(?i:option)\s*)?\(?([A-J])\)?(?![A-Za-z])"
)
_LEADING_LETTER = re.compile(r"^\s*\(?([A-J])(?:[).:]|\)?\s*$)")
#: the looser forms, in order; the first that matches gives the letter (the last pattern: its last match)
_LOOSE_LETTER = (
    re.compile(r"answer is \(?([A-J])\)?", re.IGNORECASE),
    re.compile(r"answer\s*[:：]\s*\(?([A-J])\)?", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-J])[).:]?\s*$", re.MULTILINE),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"\b([A-J])\b"),
)
_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_NUMBER = re.compile(_NUM)
_NUMBER_AFTER_ANSWER = re.compile(rf"(?i:answer)[^0-9\-]{{0,20}}({_NUM})")
_MAX_TEXT_KEY = 200


def stated_choice(text: str) -> str | None:
    """The option letter the reply states outright (see the module docstring), or None."""
    m = _ANSWER_PHRASE.search(text) or _LEADING_LETTER.search(text)
    return m.group(1) if m else None


def extract_letter(text: str) -> str | None:
    """The chosen option letter of a reply to a multiple-choice question: `stated_choice`, else the looser
    forms ('the answer is (c)', a lone letter line, '(X)', then the last lone capital A-J)."""
    stated = stated_choice(text)
    if stated is not None:
        return stated
    last = len(_LOOSE_LETTER) - 1
    for i, pat in enumerate(_LOOSE_LETTER):
        found = pat.findall(text)
        if found:
            return (found[-1] if i == last else found[0]).upper()
    return None


def normalise_number(s: str) -> str | None:
    """'1,234' -> '1234', '7.0' -> '7', '2.50' -> '2.5'; None when `s` is not a number."""
    s = s.replace(",", "").strip().rstrip(".")
    try:
        x = float(s)
    except ValueError:
        return None
    return str(int(x)) if x == int(x) else repr(x)


def extract_number(text: str) -> str | None:
    """The reply's final answer as a normalised number (see the module docstring), or None."""
    if "####" in text:
        nums = _NUMBER.findall(text.rsplit("####", 1)[1])
    else:
        m = _NUMBER_AFTER_ANSWER.search(text)
        nums = [m.group(1)] if m else _NUMBER.findall(text)
    return normalise_number(nums[-1]) if nums else None


def normalise_answer(text: str) -> str:
    """A comparable key for `vote`: 'choice:B', 'num:42', or 'text:<lower-cased words>'."""
    letter = stated_choice(text)
    if letter is not None:
        return f"choice:{letter}"
    num = extract_number(text)
    if num is not None:
        return f"num:{num}"
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return "text:" + " ".join(words)[:_MAX_TEXT_KEY]
