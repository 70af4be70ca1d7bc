"""Intent labels by what a prompt asks, not by the source it came from (docs/router.md, "Labels by intent").

Three layers, each documented where it lives:

* `arena_clusters.yaml`: the reviewed table that maps each of arena_hard_v0.1's 250 topic clusters to an
  intent, plus per-prompt `overrides` where a prompt asks something else than its cluster's name says;
* `rule_intent`: written rules (regular expressions below) that claim a prompt when it plainly asks for
  code, maths, a persona, a piece of writing or a summary/extraction;
* a teacher (eval/data/teacher.py: `python -m eval.data.teacher --data ../shared/data`), the `coe router
train`
  recipe fitted on the clearly-labelled sources, for the prompts of the unlabelled real-prompt sources that
  no rule claims; its calls are committed in `intent_labels.yaml` (source -> id -> [intent, P]) so
  training never refits it.

Intents are router categories: coding, math, writing, roleplay, reasoning, extraction, chat, and the exam
subjects (physics, health, law, ...) where a prompt is a question on one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from eval.data.datasets import DataError

HERE = Path(__file__).parent
CLUSTERS = HERE / "arena_clusters.yaml"
INTENT_LABELS = HERE / "intent_labels.yaml"
#: the teacher's call is used when it is at least this sure (below it: the source's `otherwise`); chosen
#: by reading the calls: below 0.7 it called household how-tos ("How to make frosting") coding
TEACHER_MIN_P = 0.7

#: the traffic intents (router categories) besides the exam subjects
INTENTS: tuple[str, ...] = ("coding", "math", "writing", "roleplay", "reasoning", "extraction", "chat")
SUBJECTS: tuple[str, ...] = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
    "history", "law", "other", "philosophy", "physics", "psychology",
)  # fmt: skip

_LANG = (
    r"python|javascript|typescript|java\b|c\+\+|c#|\bc code|golang|\bgo code|rust\b|kotlin|swift\b|scala\b|"
    r"haskell|perl\b|php|ruby\b|lua\b|matlab|vba\b|vb\.net|bash\b|shell script|powershell|sql\b|mysql|"
    r"postgres|regex|regular expression|html|css\b|(?-i:React)\b|react ?(js|native|app|component|hook)s?\b|"
    r"vue\b|angular|django|flask|fastapi|node\.?js|"
    r"pandas|numpy|pytorch|tensorflow|keras|scikit|sklearn|dockerfile|kubernetes|terraform|"
    r"jupyter|npm\b|pip install|linux command|assembly|arduino|verilog|vhdl|latex code|"
    r"solidity|gdscript|roblox|luau|excel formula|google apps script|jquery|tailwind|"
    r"next\.?js|svelte|laravel|symfony|wordpress plugin|compiler|algorithm|"
    # technical computing people ask "how do I ..." about (shell, tools, systems): coding, not chat
    r"git\b|docker|linux|ubuntu|debian|nginx|btrfs|luks|systemd|ssh\b|cron\b|bundle exec|"
    r"visual studio|vs ?code|vim\b|emacs|api endpoint|rest api|database schema|"
    r"uuid|developer tools|command line|terminal command|programming language"
)
#: a request for code, or a prompt carrying code
CODING = re.compile(
    rf"(?is)```|\b({_LANG})|\b(write|give|show|make|create|generate|implement|build|fix|debug|refactor|"
    # "class": not a school's ("make a presentation in class")
    r"optimi[sz]e|convert|translate|rewrite)\b[^.?!\n]{0,60}\b(code|script|program|function|"
    r"(?<!in )(?<!in  )class|method|"
    r"snippet|query|app|bot|plugin|extension|module|library|endpoint)\b|\b(stack ?trace|traceback|"
    r"segfault|syntax error|compile error|exception in|unit tests?|source code|codebase|"
    r"programming|coding|this code|the code|my code)\b|^\s*(def|class|import|#include|function|public|const|"
    r"let|var)\b|"
    # a call or inline code: "how to use math.isclose()?", "when I run `rails assets:precompile`"
    r"(?-i:\b(in|using) C\b(?![+#]))|\b[A-Za-z_]\w*\.[A-Za-z_]\w*\(|"
    r"`(?=[^`\n]*[A-Za-z]{2})[^`\n]{0,60}[=(){}\[\]/.$_:<>][^`\n]{0,60}`"
)
#: a maths problem: LaTeX, equations, proofs, probability, arithmetic on stated numbers
MATH = re.compile(
    # inline LaTeX, not a price: "$x^2 + 1$", "$C(s)$", never "$30 ... $10" nor "1000$ from 10$"
    r"(?is)(?<![\w$])\$(?![\d\s{])[^${}\n]{1,200}(?<!\s)\$(?![\d\w])|"
    r"\\(frac|sqrt|int|sum|cdot|le|ge|mathbb)\b|"
    # "prove that", "a proof of"; never "a proof reader", "a thesis … and prove it", "differentiate between"
    r"\bprove (that|the|this|there|its|each|every|all|by|using|without|whether|or disprove|[a-z]\s?[=<>])\b|"
    r"\bproof(?![- ]?read)\b|\b(theorem|"
    r"lemma|equation|integral|derivative|differentiate(?! between)|polynomial|eigen\w*|probability|"
    r"expected value|how many (ways|integers|numbers|solutions)|solve for|find (the )?(value|sum|product|"
    r"area|volume|remainder|smallest|largest|number of)|arithmetic|algebra\w*|calculus|"
    r"combinatori\w*|number theory|prime numbers?|divisible|factorial|modulo|real analysis|"
    # arithmetic and statistics asked in words: "the square root of 144", "a palindrome number greater than"
    r"square root|cube root|palindrome number|nearest whole number|standard deviation|hypothesis test|"
    r"linear regression|regression model|mean and median|"
    r"(what|calculate|compute|find|figure out|work out) (is )?(the )?percentage of|greatest common|"
    r"least common)\b|"
    r"\b\d+\s*[-+*/^=]\s*\d+\s*[=?]|"
    # a word problem: two numbers (a price is one too), then a question "how much / how many …?"
    r"\d[^?\d]{1,400}\d.{0,600}?\bhow (much|many)\b[^?]{0,200}\?"
)
#: a persona or a game the assistant is asked to play
ROLEPLAY = re.compile(
    r"(?is)^\W*(i want you to act|act as|acting as|you are (now )?(a|an|my|the)\b|you will (be|act|play)|"
    r"pretend|imagine you are|role-?play|let'?s play|lets play|you're (a|an) |assume the role|"
    r"take on the role|play the role|from now on,? you)"
)
#: a piece of writing: creative, professional or an essay (the generalist's work)
WRITING = re.compile(
    r"(?is)^\W*(please\s+|can you\s+|could you\s+|help me\s+|i need you to\s+)?(write|compose|draft|"
    r"create|generate|give me|craft|come up with|rewrite|paraphrase|proofread|edit|improve)\b[^.?!\n]{0,60}"
    r"\b(poems?|story|stories|songs?|lyrics|essay|letter|e-?mail|blog|article|speech|haiku|limerick|"
    r"rap|sonnet|tweet|slogan|tagline|joke|riddle|cover letter|resume|cv|bio|description|post|"
    r"advert\w*|script for|screenplay|dialogue|dialog|story|novel|chapter|ode|toast|eulogy|"
    r"invitation|announcement|press release|newsletter|caption|title|headline|text|paragraph|"
    r"sentence|outline|proposal|report|review|summary of the novel|backstory|manual)\b|"
    r"\b(poem|haiku|limerick|sonnet|short story|song lyrics)\b"
)
#: pull fields, a summary or categories out of given text
EXTRACTION = re.compile(
    r"(?is)\b(summari[sz]e|summary of (the|this)|tl;?dr|extract|categori[sz]e (the|these|this|each)|"
    r"classify (the|these|this|each)|list (all )?the (names|entities|dates)|key points of|"
    r"identify the (named entities|main idea))\b"
)

#: a script to perform, not to run: "a YouTube script", "an original script for a TV show pilot" (without this
#: the coding rule took them: the 200-label audit, docs/router.md)
SCREENPLAY = re.compile(
    r"(?is)\b(youtube|video|tv|television|film|movie|pilot|commercial|podcast|animation|cartoon|radio|"
    r"theat(re|er)|comedy|sketch|episode)\b[^.?!\n]{0,40}\bscript\b|\bscript (for|of) (a|an|the|my)\b"
    r"[^.?!\n]{0,50}\b(video|show|film|movie|pilot|commercial|podcast|play|episode|scene|animation|"
    r"cartoon|series)\b"
)

RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("writing", SCREENPLAY),
    ("coding", CODING),
    ("math", MATH),
    ("roleplay", ROLEPLAY),
    ("extraction", EXTRACTION),
    ("writing", WRITING),
)


def rule_intent(text: str) -> str | None:
    """The first rule that claims the prompt (order: a screenplay, coding, maths, role-play, extraction,
    writing),
    else None (the teacher or the source's default decides)."""
    head = text[:2000]
    for intent, pattern in RULES:
        if pattern.search(head):
            return intent
    return None


# --- the arena_hard cluster table and the committed teacher labels ---------------------------------------
def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def load_clusters(path: str | Path = CLUSTERS) -> tuple[dict[str, str], dict[str, str]]:
    """(cluster -> intent, prompt uid -> intent) of the reviewed arena_hard table."""
    raw = _yaml(Path(path))
    if not isinstance(raw, dict) or not isinstance(raw.get("clusters"), dict):
        raise DataError(f"{path}: no 'clusters' table")
    known = set(INTENTS) | set(SUBJECTS)
    clusters = {str(k): str(v) for k, v in raw["clusters"].items()}
    overrides = {str(k): str(v).split("#")[0].strip() for k, v in (raw.get("overrides") or {}).items()}
    bad = sorted({v for v in [*clusters.values(), *overrides.values()] if v not in known})
    if bad:
        raise DataError(f"{path}: unknown intents {bad}; known: {', '.join(sorted(known))}")
    return clusters, overrides


def load_intent_labels(
    path: str | Path = INTENT_LABELS, min_p: float | None = None
) -> dict[str, dict[str, str]]:
    """source -> row id -> the teacher's intent where it is at least `min_p` (default TEACHER_MIN_P)
    sure, from the calls `python -m eval.data.teacher` committed (source -> id -> [intent, P])."""
    p = Path(path)
    if not p.exists():
        return {}
    raw = _yaml(p)
    if not isinstance(raw, dict):
        raise DataError(f"{p}: expected source -> id -> [intent, P]")
    floor = TEACHER_MIN_P if min_p is None else min_p
    try:
        return {
            str(s): {str(k): str(v[0]) for k, v in (rows or {}).items() if float(v[1]) >= floor}
            for s, rows in raw.items()
        }
    except (TypeError, ValueError, IndexError, AttributeError):
        raise DataError(f"{p}: expected source -> id -> [intent, P]") from None
