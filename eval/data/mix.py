"""The `mix` training format: traffic-like labelled prompts from several public sources under one data
folder (../shared/data), labelled through the reviewed table in eval/data/label_map.yaml.

Every Example carries its `source` (the table's key: mmlu_pro, gsm8k, humaneval, mbpp, mt_bench, vicuna,
alpaca_eval), so training can split per source and the eval can hold one source out. Texts that occur
in two sources are kept once, in the first source of the table that has them."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.data.datasets import DataError, Example, _parse_options, load_mmlu_pro

LABEL_MAP = Path(__file__).with_name("label_map.yaml")


def load_label_map(path: str | Path = LABEL_MAP) -> dict[str, dict[str, Any]]:
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{p}: cannot read the label map ({exc})") from None
    sources = raw.get("sources") if isinstance(raw, dict) else None
    if not isinstance(sources, dict) or not sources:
        raise DataError(f"{p}: no 'sources' table")
    for name, spec in sources.items():
        if name not in READERS:
            raise DataError(f"{p}: unknown source {name!r}; known: {', '.join(READERS)}")
        modes = [k for k in LABEL_MODES if k in spec] if isinstance(spec, dict) else []
        if not isinstance(spec, dict) or "path" not in spec or len(modes) != 1:
            raise DataError(f"{p}: source {name!r} needs a path and exactly one of {' / '.join(LABEL_MODES)}")
    return sources


#: how a source's rows get their category: one for all (`label`), the source's own label mapped
#: (`labels`), the reviewed arena_hard cluster table (`clusters`), or by what each prompt asks (`intents`:
#: eval/data/intents.py rules, then the committed teacher labels, then `otherwise`; null = left out)
LABEL_MODES = ("label", "labels", "clusters", "intents")


# --- one reader per source: (text, source label, id, group) rows -------------------------------------------
Row = tuple[str, str, str, str]  # group "" = "<source>-<label>"


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _mmlu(path: Path) -> Iterator[Row]:
    for e in load_mmlu_pro(path):
        yield e.text, e.label, e.id, e.group  # MMLU-Pro `src`: whole subjects for calibration splits


def _gsm8k(path: Path) -> Iterator[Row]:
    for i, r in enumerate(_jsonl(path)):
        yield str(r["question"]).strip(), "", str(i), ""


def _humaneval(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        yield str(r["prompt"]).strip(), "", str(r["task_id"]), ""


#: where a HumanEval docstring's worked examples start (doctests, "Example:", "For example", "f(x) == y")
_EXAMPLES = re.compile(r"(?im)^\s*(>>>|(for )?examples?\b|e\.g\.|note:|\w+\(.*\)\s*(==|=>|➞|->))")


def humaneval_request(prompt: str) -> str | None:
    """A HumanEval prompt as a plain-language coding request: the description of the function to write
    (its docstring up to the worked examples) followed by its `def` line. No words are added: the rows
    read like a user describing a function and pasting its signature, which the code+docstring prompt
    does not (docs/router.md, "Training data"). None when the prompt has no usable docstring."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return None
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    doc = ast.get_docstring(funcs[-1]) if funcs else None
    if not doc:
        return None
    m = _EXAMPLES.search(doc)
    desc = " ".join((doc[: m.start()] if m else doc).split())
    if len(desc) < 20:
        return None
    line = prompt.splitlines()[funcs[-1].lineno - 1].strip()
    return f"{desc}\n\n{line}"


def _humaneval_nl(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        text = humaneval_request(str(r["prompt"]))
        if text:
            yield text, "", str(r["task_id"]), ""


def _mbpp(path: Path) -> Iterator[Row]:
    csv.field_size_limit(1 << 30)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            for r in csv.DictReader(fh):
                turns = _parse_options(r["prompt"])  # a Python-list string of turns
                yield (turns[0] if turns else r["prompt"]).strip(), "", str(r["sample_id"]), ""
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except KeyError as exc:
        raise DataError(f"{path}: no column {exc}") from None


def _fastchat(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        yield str(r["turns"][0]).strip(), str(r["category"]), str(r["question_id"]), ""


def _alpaca(path: Path, drop: Sequence[str] = ()) -> Iterator[Row]:
    files = sorted(path.glob("*/*/annotations.json"))
    if not files:
        raise DataError(f"{path}: no <model>/<annotator>/annotations.json files")
    try:
        rows = json.loads(
            files[0].read_text(encoding="utf-8")
        )  # every model's file has the same instructions
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{files[0]}: cannot read ({exc})") from None
    for i, r in enumerate(rows):
        if r.get("dataset") not in drop:
            yield str(r["instruction"]).strip(), str(r.get("dataset", "")), str(i), ""


def _arena_hard(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        yield str(r["prompt"]).strip(), str(r["cluster"]), str(r["uid"]), ""


def _arena_bench(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        yield str(r["turns"][0]).strip(), "", str(r["question_id"]), ""


#: the Open-Assistant files of first-turn prompts (multilingual-60 is a hand-picked probe set, and
#: en_100_message.jsonl holds the same prompts as en_100_text.jsonl with their reply trees)
OASST_FILES = ("prompt_lottery_en_250_text.jsonl", "en_100_text.jsonl")


def _oasst(path: Path) -> Iterator[Row]:
    for name in OASST_FILES:
        for i, text in enumerate(_jsonl(path / name)):
            yield str(text).strip(), "", f"{name.split('_text')[0]}-{i}", ""


def _ifeval(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        yield str(r["prompt"]).strip(), "", str(r["key"]), ""


def _math500(path: Path) -> Iterator[Row]:
    for i, r in enumerate(_jsonl(path)):
        yield str(r["problem"]).strip(), str(r.get("subject", "")), str(r.get("unique_id", i)), ""


def _awesome(path: Path) -> Iterator[Row]:
    """The text personas and requests of awesome-chatgpt-prompts (its IMAGE and STRUCTURED rows are
    image-generation specs, not requests)."""
    csv.field_size_limit(1 << 30)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            for i, r in enumerate(csv.DictReader(fh)):
                if r.get("type", "TEXT") == "TEXT" and len(r["prompt"]) <= 2000:
                    yield r["prompt"].strip(), str(r.get("for_devs", "")), str(i), ""
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except KeyError as exc:
        raise DataError(f"{path}: no column {exc}") from None


def _with_input(instruction: Any, given: Any) -> str:
    """An instruction with the input it comes with, as a user would paste it below the request."""
    text, extra = str(instruction).strip(), str(given or "").strip()
    return f"{text}\n\n{extra}" if extra else text


def _codealpaca(path: Path) -> Iterator[Row]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    for i, r in enumerate(rows):
        yield _with_input(r["instruction"], r.get("input")), "", str(i), ""


def _wizardlm(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        yield str(r["Instruction"]).strip(), str(r["Skill"]), str(r["idx"]), ""


def _self_instruct(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        inst = r.get("instances") or [{}]
        yield _with_input(r["instruction"], inst[0].get("input")), str(r["motivation_app"]), str(r["id"]), ""


def _koala(path: Path) -> Iterator[Row]:
    for r in _jsonl(path):
        yield str(r["prompt"]).strip(), "", str(r["id"]), ""


READERS: Mapping[str, Callable[..., Iterator[Row]]] = {
    "mmlu_pro": _mmlu,
    "gsm8k": _gsm8k,
    "humaneval": _humaneval,
    "humaneval_nl": _humaneval_nl,
    "mbpp": _mbpp,
    "mt_bench": _fastchat,
    "vicuna": _fastchat,
    "alpaca_eval": _alpaca,
    "arena_hard": _arena_hard,
    "arena_bench": _arena_bench,
    "oasst": _oasst,
    "ifeval": _ifeval,
    "math500": _math500,
    "gsm8k_test": _gsm8k,
    "awesome_chatgpt": _awesome,
    "codealpaca": _codealpaca,
    "wizardlm": _wizardlm,
    "self_instruct": _self_instruct,
    "koala": _koala,
}


def load_source(name: str, spec: Mapping[str, Any], data: Path, seed: int = 0) -> list[Example]:
    path = data / str(spec["path"])
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (source {name!r} of the label map)")
    reader = READERS[name]
    rows = reader(path, spec.get("drop_datasets", ())) if name == "alpaca_eval" else reader(path)
    label_of = _labeller(name, spec)
    dropped = {str(i) for i in spec.get("drop_ids") or ()}
    out = []
    try:
        for text, raw, rid, group in rows:
            if not text or rid in dropped:
                continue
            label = label_of(text, raw, rid)
            if label is None:
                continue
            out.append(
                Example(
                    text=text, label=label, id=f"{name}:{rid}", group=group or f"{name}-{raw}", source=name
                )
            )
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"{path}: a row lacks a field ({exc!r})") from None
    limit = spec.get("limit")
    if limit is not None and len(out) > int(limit):
        idx = sorted(random.Random(seed).sample(range(len(out)), int(limit)))
        out = [out[i] for i in idx]
    return out


def _labeller(name: str, spec: Mapping[str, Any]) -> Callable[[str, str, str], str | None]:
    """(text, source label, row id) -> category, or None to leave the row out (LABEL_MODES)."""
    path = spec["path"]
    if "label" in spec:
        fixed = str(spec["label"])
        return lambda _t, _r, _i: fixed
    if "labels" in spec:
        labels = spec["labels"]

        def mapped(_t: str, raw: str, _i: str) -> str | None:
            if raw not in labels:
                raise DataError(f"{path}: label {raw!r} of source {name!r} is not in the label map")
            return None if labels[raw] is None else str(labels[raw])

        return mapped
    from eval.data.intents import HERE, load_clusters, load_intent_labels, rule_intent

    if "clusters" in spec:
        clusters, overrides = load_clusters(HERE / str(spec["clusters"]))

        def clustered(_t: str, raw: str, rid: str) -> str | None:
            if rid in overrides:
                return overrides[rid]
            if raw not in clusters:
                raise DataError(f"{path}: cluster {raw!r} of source {name!r} is not in {spec['clusters']}")
            return clusters[raw]

        return clustered
    intents = spec["intents"] or {}
    teacher = load_intent_labels().get(name, {}) if intents.get("teacher") else {}
    otherwise = intents.get("otherwise")

    def by_intent(text: str, _r: str, rid: str) -> str | None:
        return rule_intent(text) or teacher.get(rid) or (None if otherwise is None else str(otherwise))

    return by_intent


def licences(label_map: str | Path = LABEL_MAP) -> dict[str, str]:
    """Source -> its licence as the label map records it (from ../shared/data/SOURCES.md)."""
    return {n: str(spec.get("licence", "unknown")) for n, spec in load_label_map(label_map).items()}


def real_sources(label_map: str | Path = LABEL_MAP) -> frozenset[str]:
    """The sources of prompts real people typed (`real: true`)."""
    return frozenset(n for n, spec in load_label_map(label_map).items() if spec.get("real"))


def balance_groups(label_map: str | Path = LABEL_MAP) -> dict[str, str]:
    """Source -> the group `--source-balance` weighs evenly within each category: `real` (prompts people
    typed: Arena-Hard, Arena-Bench, Open-Assistant) or `written` (benchmarks and written sets)."""
    return {n: "real" if spec.get("real") else "written" for n, spec in load_label_map(label_map).items()}


def eval_only(label_map: str | Path = LABEL_MAP) -> frozenset[str]:
    """The sources that are tested on but never trained on."""
    return frozenset(n for n, spec in load_label_map(label_map).items() if spec.get("eval_only"))


def nest_sources(label_map: str | Path = LABEL_MAP) -> frozenset[str]:
    """The sources whose own categories the router nests (`nest: true`: MMLU-Pro's exam subjects)."""
    return frozenset(n for n, spec in load_label_map(label_map).items() if spec.get("nest"))


def families(label_map: str | Path = LABEL_MAP) -> dict[str, str]:
    """Source -> the source its rows come from (`derived_from`; itself when none): a held-out source
    takes its derived sources with it, so the leave-one-source-out eval never trains on a transformation
    of the rows it tests on."""
    return {n: str(spec.get("derived_from") or n) for n, spec in load_label_map(label_map).items()}


def load_mix(
    data: str | Path,
    *,
    label_map: str | Path = LABEL_MAP,
    sources: Sequence[str] | None = None,
    seed: int = 0,
    with_eval_only: bool = False,
) -> list[Example]:
    """The training sources of the label map (or the named ones; `with_eval_only` adds the eval-only
    ones), relabelled, deduplicated by text across sources."""
    table = load_label_map(label_map)
    d = Path(data)
    if not d.is_dir():
        raise DataError(f"{d}: not a folder (--format mix reads the shared data folder)")
    if sources is None:
        sources = [n for n in table if with_eval_only or not table[n].get("eval_only")]
    names = list(sources)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise DataError(f"unknown source {unknown[0]!r}; the label map has: {', '.join(table)}")
    seen: set[str] = set()
    out = []
    for name in names:
        # within a source every row stays (MMLU-Pro repeats some questions under other ids, and its
        # held-out split must stay the one the MMLU-only router was measured on)
        kept = [e for e in load_source(name, table[name], d, seed) if _key(e.text) not in seen]
        seen.update(_key(e.text) for e in kept)
        out += kept
    return out


def _key(text: str) -> str:
    return " ".join(text.lower().split())
