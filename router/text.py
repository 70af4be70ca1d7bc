"""What the classifier reads of a prompt. MiniLM truncates at 256 tokens (about 1,000 characters of
English), so a long code dump or pasted document followed by a one-line question would be classified
by the paste alone. `routing_text` rewrites a prompt so the instruction comes first:

  1. fenced blocks (```...```) are cut out: the prose around them (the instruction) is what the
     classifier reads; a prompt that is nothing but fenced blocks is read as its blocks. Code, stack
     traces and logs pasted without fences (runs of lines only such material looks like, `_CODE_LINE`)
     are cut out the same way;
  2. a result still longer than MAX_CHARS keeps its head and its tail (questions often come last).

Keeping the blocks' first lines after the instruction was measured and rejected: with a real pasted
function after (or before) a question from another source, the question's category survived in 43% of
300 prompts with 3 lines kept, 87% with 1 line, 98% with an empty fence as a marker, and 100% with the
blocks cut (11% when the whole text is read; docs/router.md). The cost: "why does this crash?" above a
pasted traceback is classified by those words alone.

`code_text` is the other half: the pasted blocks of a prompt that has prose as well. The service reads
them only when the instruction alone cannot route the prompt (`Router.probabilities`): when it names no
subject ("my script crashes, how do I fix it?" reads as chat: the pasted code decides) or is below the
fallback threshold ("Can you parallelize it?": the two readings are averaged). A question that names its
subject confidently keeps its category whatever code it carries.

A prompt with no fences and at most MAX_CHARS characters is returned unchanged, so short prompts (most
traffic, every training question but a few) read exactly as before. Service (router/core.py), training
and eval all call this one function. docs/router.md measures it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: a fenced block: ``` or ~~~ with an optional info string, up to the closing fence or the end of the text
_FENCE = re.compile(r"(?ms)^[ \t]*(```|~~~)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)")
#: MiniLM reads 256 tokens, about 1,000-1,300 characters of English
MAX_CHARS = 1200
TAIL_CHARS = 400


@dataclass(frozen=True, slots=True)
class PromptParts:
    instruction: str  # the prose outside fenced blocks
    blocks: tuple[str, ...]  # the fenced blocks' contents, in order


#: a line of code, a stack trace or a log: what only pasted material looks like, never an instruction in prose
_CODE_LINE = re.compile(
    r"""^\s*(?:
        (?:def|class|import|return|elif|except|finally|raise|yield|lambda|async\ def|await|public|private
          |protected|static|void|const|let|var|function|fn|func|package|namespace|struct|enum|impl|pub
          |\#include|\#define|\#!|@\w+)\b
      | from\s+[\w.]+\s+import\b
      | (?:if|for|while|switch|case|else|try|with|catch|do)\b.*[:{]\s*$
      | (?:SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|CREATE\s+TABLE)\s
      | [\w.\[\]'"]+\s*(?:[-+*/%|&]?=|:=)\s*[^=\s].*   # an assignment (not a comparison)
      | [\w.$]+\(.*\)\s*;?\s*$                            # a call statement
      | (?://|/\*|\*/|<\w+[^>]*>$|</\w+>$)                 # C-style comments, a line of markup
      | [\])}]+[;,)]*\s*$                                  # closing brackets
      | .*[{;]\s*$                                        # ends a statement or opens a block
      | Traceback\ \(most\ recent\ call\ last\)
      | File\ ".*",\ line\ \d+
      | at\ [\w.$<>]+\(.*\)$                              # a Java/JS stack frame
      | [\w.]*(?:Error|Exception)(?::|$)
      | \[?\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}                  # a timestamped log line
    )""",
    re.VERBOSE,
)
#: a pasted run without fences counts as a block from this many code lines on
MIN_CODE_LINES = 3
#: longer lines are prose (or minified code, which reads as noise either way): never matched, so one huge
#: line costs no regex backtracking on the request path
MAX_CODE_LINE = 400


def _is_code(line: str) -> bool:
    return len(line) <= MAX_CODE_LINE and _CODE_LINE.match(line) is not None


def _unfenced_blocks(prose: str) -> tuple[str, tuple[str, ...]]:
    """Runs of code, stack-trace or log lines pasted without fences: (the rest, the runs). A run starts
    at a code line and goes on over code lines, blank lines, `#` comments and lines indented by two
    spaces or a tab (a function body, a docstring, a frame's source line); it counts as pasted with two
    code lines or more and MIN_CODE_LINES lines of code or indented lines in all."""
    lines = prose.split("\n")
    keep: list[str] = []
    runs: list[str] = []
    i = 0
    while i < len(lines):
        if not _is_code(lines[i]):
            keep.append(lines[i])
            i += 1
            continue
        j, code, indented = i + 1, 1, 0
        while j < len(lines):
            line = lines[j]
            if _is_code(line):
                code += 1
            elif line.startswith(("  ", "\t")) and line.strip():
                indented += 1
            elif line.strip() and not line.lstrip().startswith("#"):
                break
            j += 1
        while j > i and not lines[j - 1].strip():  # trailing blank lines stay with the prose
            j -= 1
        if code >= 2 and code + indented >= MIN_CODE_LINES:
            runs.append("\n".join(lines[i:j]))
            keep.append("")
        else:
            keep.extend(lines[i:j])
        i = j  # >= i + 1: lines[i] is a code line, so the trim above stops after it
    return "\n".join(keep), tuple(runs)


def split_prompt(text: str) -> PromptParts:
    """The prose of a prompt and the material pasted into it: fenced blocks, then runs of code, stack
    trace or log lines pasted without fences (`_unfenced_blocks`)."""
    fenced = tuple(m.group(2) for m in _FENCE.finditer(text))
    prose, pasted = _unfenced_blocks(_FENCE.sub("\n", text) if fenced else text)
    return PromptParts(re.sub(r"\n{3,}", "\n\n", prose).strip(), fenced + pasted)


def head_tail(text: str, limit: int = MAX_CHARS, tail: int = TAIL_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - tail] + "\n…\n" + text[-tail:]


def routing_text(text: str) -> str:
    """The text to embed and classify for `text` (see the module docstring)."""
    parts = split_prompt(text)
    if not parts.blocks:
        return head_tail(text)
    if parts.instruction:
        return head_tail(parts.instruction)
    return head_tail("\n\n".join(b.strip("\n") for b in parts.blocks))


def code_text(text: str) -> str | None:
    """The fenced blocks of a prompt that also has prose, as the classifier would read them; None when
    the prompt has no blocks, or nothing but blocks (then `routing_text` already reads the code)."""
    parts = split_prompt(text)
    if not parts.blocks or not parts.instruction:
        return None
    return head_tail("\n\n".join(b.strip("\n") for b in parts.blocks))


def conversation_text(
    turns: Sequence[tuple[str, str]], earlier_share: float = 0.5, min_earlier: int = 200
) -> str:
    """The routed text of a conversation, from its (role, text) turns in order (text parts only; the
    service and `coe eval routing` both call this): the last user turn in full, then earlier user turns
    (most recent first) cut to a share of the last one's length, so the last turn weighs most. With no
    user text at all (only a tool result, say), the text the conversation continues: the assistant's
    turns, else the system/developer instructions; with no text anywhere, the empty string."""
    for roles in (("user",), ("assistant",), ("system", "developer")):
        texts = [t for t in (text.strip() for role, text in turns if role in roles) if t]
        if texts:
            break
    else:
        return ""
    last, earlier = texts[-1], texts[:-1]
    if not earlier:
        return last
    budget = max(min_earlier, int(len(last) * earlier_share))
    return f"{last}\n\n" + "\n".join(reversed(earlier))[:budget]
