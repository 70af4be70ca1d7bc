"""What the classifier reads of a prompt. MiniLM truncates at 256 tokens (about 1,000 characters of
English), so a long code dump or pasted document followed by a one-line question would be classified
by the paste alone. `routing_text` rewrites a prompt so the instruction comes first:

  1. fenced blocks (```...```) are cut out of the prose and kept only as their first lines
     (BLOCK_HEAD_LINES, at most BLOCK_HEAD_CHARS): enough to say "there is Python code here",
     not enough to drown the question;
  2. the prose (the instruction) goes first, the block heads after it;
  3. a result still longer than MAX_CHARS keeps its head and its tail (questions often come last).

A prompt with no fences and at most MAX_CHARS characters is returned unchanged, so short prompts (most
traffic, every training question but a few) read exactly as before. Service (router/core.py), training
and eval all call this one function. docs/router.md measures it."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: a fenced block: ``` or ~~~ with an optional info string, up to the closing fence or the end of the text
_FENCE = re.compile(r"(?ms)^[ \t]*(```|~~~)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)")
BLOCK_HEAD_LINES = 3
BLOCK_HEAD_CHARS = 200
MAX_CHARS = 1200
TAIL_CHARS = 400


@dataclass(frozen=True, slots=True)
class PromptParts:
    instruction: str  # the prose outside fenced blocks
    blocks: tuple[str, ...]  # the fenced blocks' contents, in order


def split_prompt(text: str) -> PromptParts:
    blocks = tuple(m.group(2) for m in _FENCE.finditer(text))
    prose = _FENCE.sub("\n", text) if blocks else text
    return PromptParts(re.sub(r"\n{3,}", "\n\n", prose).strip(), blocks)


def _head(block: str) -> str:
    lines = [ln for ln in block.splitlines() if ln.strip()][:BLOCK_HEAD_LINES]
    return "\n".join(lines)[:BLOCK_HEAD_CHARS]


def head_tail(text: str, limit: int = MAX_CHARS, tail: int = TAIL_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - tail] + "\n…\n" + text[-tail:]


def routing_text(text: str) -> str:
    """The text to embed and classify for `text` (see the module docstring)."""
    parts = split_prompt(text)
    if not parts.blocks:
        return head_tail(text)
    heads = "\n".join(f"```\n{_head(b)}\n```" for b in parts.blocks if b.strip())
    body = f"{parts.instruction}\n\n{heads}".strip() if parts.instruction else heads
    return head_tail(body)
