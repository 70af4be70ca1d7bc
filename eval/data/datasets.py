"""Labelled-text loaders for router training and classification eval.

Formats: `mmlu-pro` (the TIGER-AI-Lab model-output zips: one zip, or a folder of them merged by
question_id), `mix` (several sources under the shared data folder, relabelled by eval/data/label_map.yaml:
eval/data/mix.py), `jsonl` and `csv` (any text and label fields). Malformed input raises DataError naming the
file and line. `limit` takes a seeded random sample, so a slice covers every category."""

from __future__ import annotations

import ast
import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.outcomes.mmlu_pro import read_model_outputs
from router.errors import BadRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MMLU_PRO_DIR = SHARED_DATA / "mmlu_pro" / "eval_results"


class DataError(BadRequest):
    """Unreadable or malformed dataset (CLI: one line, exit 2)."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    id: str = ""
    group: str = (
        ""  # provenance, e.g. MMLU-Pro `src` ("ori_mmlu-anatomy", "stemez-Physics"), for family splits
    )
    options: tuple[str, ...] = ()  # multiple-choice options, when the source has them
    source: str = ""  # the dataset it came from (eval/data/mix.py sources), for per-source splits and evals

    @property
    def family(self) -> str:
        """The source family of `group` ("ori_mmlu", "stemez", "theoremQA", "scibench")."""
        return self.group.split("-", 1)[0]

    def with_options_text(self) -> str:
        """The question followed by its lettered options, as a user would paste it."""
        if not self.options:
            return self.text
        return self.text + "\n" + "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(self.options))


def _parse_options(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list):
        return tuple(str(o) for o in raw)
    if isinstance(raw, str) and raw.startswith("["):
        try:
            val = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return ()
        if isinstance(val, list):
            return tuple(str(o) for o in val)
    return ()


def _mmlu_zip(path: Path) -> list[Example]:
    try:
        _, text = read_model_outputs(path)  # the one reader of these zips (eval/outcomes/mmlu_pro.py)
    except BadRequest as exc:
        raise DataError(exc.message) from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt JSON inside the zip ({exc})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of records")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            continue  # a few upstream zips interleave bare strings (category names) with the records
        if not isinstance(r.get("question"), str) or not r.get("category"):
            raise DataError(f"{path}: record {i} lacks a 'question' string or a 'category'")
        out.append(
            Example(
                text=r["question"].strip(),
                label=str(r["category"]),
                id=str(r.get("question_id", i)),
                group=str(r.get("src", "")),
                options=_parse_options(r.get("options")),
            )
        )
    return out


def load_mmlu_pro(path: str | Path = MMLU_PRO_DIR) -> list[Example]:
    """One model-output zip, or every zip in a folder merged by question_id (first seen wins)."""
    p = Path(path)
    if p.is_file():
        return _mmlu_zip(p)
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    zips = sorted(p.glob("*.zip"))
    if not zips:
        raise DataError(f"{p}: no MMLU-Pro .zip files in this folder")
    merged: dict[str, Example] = {}
    for z in zips:
        for ex in _mmlu_zip(z):
            merged.setdefault(ex.id, ex)
    return list(merged.values())


def _field(row: dict[str, Any], name: str, where: str) -> str:
    if name not in row:
        raise DataError(f"{where}: missing field {name!r}")
    val = row[name]
    if val is None or (isinstance(val, str) and not val.strip()):
        raise DataError(f"{where}: empty field {name!r}")
    if isinstance(val, (dict, list)):
        raise DataError(f"{where}: field {name!r} is not a string")
    return str(val).strip()


def load_jsonl(path: str | Path, text_field: str = "text", label_field: str = "label") -> list[Example]:
    p = Path(path)
    out = []
    try:
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{p}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{where}: expected a JSON object")
                out.append(
                    Example(
                        text=_field(row, text_field, where),
                        label=_field(row, label_field, where),
                        id=str(row.get("id", lineno)),
                    )
                )
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 text") from None
    return out


def load_csv(path: str | Path, text_field: str = "text", label_field: str = "label") -> list[Example]:
    p = Path(path)
    out = []
    try:
        with p.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise DataError(f"{p}: empty CSV file")
            for name in (text_field, label_field):
                if name not in reader.fieldnames:
                    raise DataError(f"{p}:1: no column {name!r} (columns: {', '.join(reader.fieldnames)})")
            for row in reader:
                where = f"{p}:{reader.line_num}"
                if None in row:
                    raise DataError(f"{where}: more values than header columns")
                out.append(
                    Example(
                        text=_field(row, text_field, where),
                        label=_field(row, label_field, where),
                        id=str(row.get("id") or reader.line_num),
                    )
                )
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{p}: malformed CSV ({exc})") from None
    return out


def sample(examples: Sequence[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """A seeded random subset of `limit` examples (all of them, in file order, when limit is None)."""
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit < 1:
        raise DataError("--limit must be >= 1")
    idx = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in idx]


def load_example_file(path: str | Path, name: str) -> list[Example]:
    """A category's example prompts: one per line, blank lines and surrounding spaces ignored."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 text") from None
    texts = [ln.strip() for ln in lines if ln.strip()]
    if len(texts) < 3:
        raise DataError(f"{p}: {len(texts)} example prompts for {name!r}; give at least 3, one per line")
    return [
        Example(text=t, label=name, id=f"{name}:{i}", group=f"examples-{name}", source=f"examples:{name}")
        for i, t in enumerate(texts)
    ]


def parse_examples_option(value: str) -> tuple[str, Path]:
    """NAME=FILE from `--examples`."""
    name, sep, file = value.partition("=")
    if not sep or not name.strip() or not file.strip():
        raise DataError(f"--examples {value!r}: expected NAME=FILE")
    return name.strip(), Path(file.strip())
