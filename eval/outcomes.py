"""Outcome matrices: how well (quality in [0, 1]) and at what price (USD) each model answered each query,
loaded from the public formats in ../shared/data (see SOURCES.md there).

Formats (`LOADERS`, by name):
- ``mmlu-pro``: TIGER-AI-Lab MMLU-Pro model-output zips (one JSON list per model).
  Correct = ``pred == answer``, a null ``pred`` is wrong. Costs come from ``eval/prices.yaml``
  (USD per 1M tokens) times token counts
  estimated from characters (``chars_per_token`` in that file, 4 by default: OpenAI's rule of thumb for
  English): prompt = question + options as the router sees it, completion = the model's generated text.
  Only the questions answered by every selected model are kept.
- ``routerbench``: RouterBench CSV; ``<model>`` correctness columns and real ``<model>|total_cost`` in USD;
  the prompt is a Python-list string, parsed with ``ast.literal_eval``; category = ``eval_name``.
- ``routerdc``: RouterDC score JSON (``question``, ``scores{model: 0..1}``); no costs, so each model gets a
  price from its parameter count (``routerdc`` section of prices.yaml) times estimated prompt tokens plus a
  fixed assumed completion length; category = the file's dataset name.
- ``jsonl`` / ``csv``: the generic outcome format (eval/outcomes_generic.py): id, prompt (text or
  OpenAI messages), optional category, per-model quality and cost_usd or token counts.
- ``alpaca-eval``: AlpacaEval annotations (one folder per model); quality = preference − 1 clipped to
  [0, 1] (2 → 1: the model beat the GPT-4-turbo baseline); cost = ``price_per_example``; models joined on
  the instruction; category = ``dataset``.

Malformed rows never vanish silently: each becomes a `RowIssue` (file, line, message) kept in
`OutcomeMatrix.issues` (the CLI prints them), or a `BadRequest` when the loader runs with ``strict=True``.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import BadRequest

PRICES_FILE = Path(__file__).with_name("prices.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One malformed input row: where it is and what is wrong with it."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class OutcomeMatrix:
    """n queries × m models. ``quality[i, j]`` in [0, 1] is how well model j answered query i and
    ``cost[i, j]`` what it cost in USD; arrays are read-only copies."""

    query_ids: np.ndarray  # (n,) str
    texts: tuple[str, ...]  # (n,) the text a router would see
    models: tuple[str, ...]  # (m,)
    quality: np.ndarray  # (n, m) float64 in [0, 1]
    cost: np.ndarray  # (n, m) float64 USD, >= 0
    categories: np.ndarray | None = None  # (n,) str
    response_chars: np.ndarray | None = None  # (n, m) length of each model's answer in characters
    source: str = ""
    cost_note: str = ""  # how costs were obtained (real, or price table × estimated tokens)
    issues: tuple[RowIssue, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        n, m = len(self.texts), len(self.models)
        ids = np.asarray(self.query_ids, dtype=object)
        quality = np.asarray(self.quality, dtype=np.float64)
        cost = np.asarray(self.cost, dtype=np.float64)
        if ids.shape != (n,) or quality.shape != (n, m) or cost.shape != (n, m):
            raise BadRequest(
                f"outcome matrix shapes disagree: {n} texts, {m} models, ids {ids.shape}, "
                f"quality {quality.shape}, cost {cost.shape}"
            )
        if len(set(self.models)) != m:
            raise BadRequest("duplicate model names in outcome matrix")
        if n and (not np.isfinite(quality).all() or quality.min() < 0 or quality.max() > 1):
            raise BadRequest("quality must be finite and in [0, 1]")
        if n and (not np.isfinite(cost).all() or cost.min() < 0):
            raise BadRequest("cost must be finite and >= 0")
        object.__setattr__(self, "query_ids", _readonly(ids))
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "quality", _readonly(quality))
        object.__setattr__(self, "cost", _readonly(cost))
        if self.categories is not None:
            cats = np.asarray(self.categories, dtype=object)
            if cats.shape != (n,):
                raise BadRequest(f"categories shape {cats.shape} != ({n},)")
            object.__setattr__(self, "categories", _readonly(cats))
        if self.response_chars is not None:
            rc = np.asarray(self.response_chars, dtype=np.float64)
            if rc.shape != (n, m):
                raise BadRequest(f"response_chars shape {rc.shape} != ({n}, {m})")
            object.__setattr__(self, "response_chars", _readonly(rc))

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def m(self) -> int:
        return len(self.models)

    def take(self, rows: Sequence[int] | np.ndarray) -> OutcomeMatrix:
        """The rows `rows` (query indices), in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        return replace(
            self,
            query_ids=self.query_ids[idx],
            texts=tuple(self.texts[i] for i in idx),
            quality=self.quality[idx],
            cost=self.cost[idx],
            categories=None if self.categories is None else self.categories[idx],
            response_chars=None if self.response_chars is None else self.response_chars[idx],
        )

    def select_models(self, names: Sequence[str]) -> OutcomeMatrix:
        """Keep the models `names`, in that order; unknown names raise BadRequest listing the known ones."""
        missing = [nm for nm in names if nm not in self.models]
        if missing:
            raise BadRequest(f"unknown model(s) {', '.join(missing)}; known: {', '.join(self.models)}")
        cols = [self.models.index(nm) for nm in names]
        return replace(
            self,
            models=tuple(names),
            quality=self.quality[:, cols],
            cost=self.cost[:, cols],
            response_chars=None if self.response_chars is None else self.response_chars[:, cols],
        )

    def split(self, train_fraction: float, seed: int = 0) -> tuple[OutcomeMatrix, OutcomeMatrix]:
        """Random train/test split, stratified by category when there are categories."""
        if not 0 < train_fraction < 1:
            raise BadRequest(f"train split must be in (0, 1), got {train_fraction}")
        rng = np.random.default_rng(seed)
        groups = (
            [np.arange(self.n)]
            if self.categories is None
            else [np.flatnonzero(self.categories == c) for c in sorted(set(self.categories))]
        )
        train: list[int] = []
        test: list[int] = []
        for g in groups:
            g = rng.permutation(g)
            k = int(round(len(g) * train_fraction))
            if len(g) >= 2:
                k = min(max(k, 1), len(g) - 1)
            train.extend(g[:k].tolist())
            test.extend(g[k:].tolist())
        if not train or not test:
            raise BadRequest(f"too few queries ({self.n}) to split")
        return self.take(sorted(train)), self.take(sorted(test))

    def category_list(self) -> list[str]:
        return [] if self.categories is None else sorted(set(self.categories.tolist()))


# ---------------------------------------------------------------------------------------------- prices


@dataclass(frozen=True, slots=True)
class Price:
    input_per_m: float  # USD per 1M prompt tokens
    output_per_m: float  # USD per 1M completion tokens

    def cost(self, prompt_tokens: np.ndarray | float, completion_tokens: np.ndarray | float) -> Any:
        return (
            np.asarray(prompt_tokens) * self.input_per_m + np.asarray(completion_tokens) * self.output_per_m
        ) / 1e6


@dataclass(frozen=True, slots=True)
class PriceTable:
    chars_per_token: float
    models: dict[str, Price]
    default_output_tokens: int = 256  # assumed completion length where a format has no answers

    def price(self, model: str) -> Price:
        try:
            return self.models[model]
        except KeyError:
            raise BadRequest(
                f"no price for model {model!r} in the price table; add it to eval/prices.yaml "
                f"(known: {', '.join(sorted(self.models))})"
            ) from None

    def tokens(self, chars: np.ndarray | float) -> np.ndarray:
        """Token estimate from a character count: ceil(chars / chars_per_token), at least 1."""
        return np.maximum(1.0, np.ceil(np.asarray(chars, dtype=np.float64) / self.chars_per_token))


def load_prices(section: str, path: Path | None = None) -> PriceTable:
    """The `section` ("mmlu-pro" or "routerdc") of the price table (eval/prices.yaml by default)."""
    import yaml

    path = path or PRICES_FILE
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BadRequest(f"cannot read price table {path}: {exc}") from None
    sec = doc.get(section) or {}
    cpt = float(doc.get("chars_per_token", 4.0))
    models: dict[str, Price] = {}
    if "per_billion_params" in sec:  # priced by size
        rate = sec["per_billion_params"]
        for name, spec in (sec.get("models") or {}).items():
            b = float(spec["params_b"])
            models[name] = Price(b * float(rate["input"]), b * float(rate["output"]))
    else:
        for name, spec in (sec.get("models") or {}).items():
            models[name] = Price(float(spec["input"]), float(spec["output"]))
    return PriceTable(cpt, models, int(sec.get("default_output_tokens", 256)))


# ---------------------------------------------------------------------------------------------- helpers


def resolve_data_path(p: str | Path) -> Path:
    """A data path as given; relative paths that do not exist from the cwd are tried from the repo root
    (so `../shared/data/...` works from anywhere)."""
    path = Path(p)
    if path.exists() or path.is_absolute():
        return path
    alt = REPO_ROOT / path
    return alt if alt.exists() else path


def iter_json_array(text: str) -> Iterator[tuple[int, Any]]:
    """(line number, element) for each element of a top-level JSON array, without losing line numbers."""
    dec = json.JSONDecoder()
    i = 0
    n = len(text)
    ws = " \t\r\n"
    while i < n and text[i] in ws:
        i += 1
    if i >= n or text[i] != "[":
        raise ValueError("not a JSON array")
    i += 1
    line, counted = 1, 0
    while True:
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == "]":
            return
        line += text.count("\n", counted, i)
        counted = i
        obj, i = dec.raw_decode(text, i)
        yield line, obj
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == ",":
            i += 1
        elif i < n and text[i] == "]":
            return
        else:
            raise ValueError(f"expected ',' or ']' at line {line + text.count(chr(10), counted, i)}")


class _Issues:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[RowIssue] = []

    def add(self, file: str | Path, line: int, message: str) -> None:
        issue = RowIssue(str(file), line, message)
        if self.strict:
            raise BadRequest(f"malformed row: {issue}")
        self.items.append(issue)


def _expand(paths: Iterable[str | Path], patterns: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = resolve_data_path(p)
        if path.is_dir():
            found = sorted({f for pat in patterns for f in path.rglob(pat)})
            if not found:
                raise BadRequest(f"no {' / '.join(patterns)} files under {path}")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise BadRequest(f"data path not found: {p}")
    return out


def _float01(value: Any) -> float:
    x = float(value)
    if not math.isfinite(x) or x < 0 or x > 1:
        raise ValueError(f"value {value!r} not in [0, 1]")
    return x


def _limit(mat: OutcomeMatrix, limit: int | None) -> OutcomeMatrix:
    return mat if limit is None or limit >= mat.n else mat.take(np.arange(limit))


def _pick_models(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return list(available)
    missing = [w for w in wanted if w not in available]
    if missing:
        raise BadRequest(f"unknown model(s) {', '.join(missing)}; known: {', '.join(available)}")
    return list(wanted)


# ---------------------------------------------------------------------------------------------- loaders

_MMLU_NAME = re.compile(r"model_outputs_(.+)_5shots\.zip$")


def mmlu_text(rec: dict[str, Any]) -> str:
    """The question as a router sees it: the question, then the lettered options."""
    opts = rec.get("options") or []
    letters = "ABCDEFGHIJKLMNOP"
    lines = [str(rec["question"]).strip()]
    lines += [f"{letters[i]}. {o}" for i, o in enumerate(opts) if i < len(letters)]
    return "\n".join(lines)


def load_mmlu_pro(
    paths: Sequence[str | Path],
    *,
    models: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = False,
    prices: PriceTable | None = None,
) -> OutcomeMatrix:
    files = [f for f in _expand(paths, ["model_outputs_*_5shots.zip"]) if _MMLU_NAME.search(f.name)]
    by_model = {_MMLU_NAME.search(f.name).group(1): f for f in files}  # type: ignore[union-attr]
    chosen = _pick_models(sorted(by_model), models)
    prices = prices or load_prices("mmlu-pro")
    for mdl in chosen:
        prices.price(mdl)  # fail before the slow part
    issues = _Issues(strict)
    per_model: dict[str, dict[str, tuple[float, int, dict[str, Any]]]] = {}
    for mdl in chosen:
        f = by_model[mdl]
        try:
            with zipfile.ZipFile(f) as z:
                inner = [nm for nm in z.namelist() if nm.endswith(".json")]
                if len(inner) != 1:
                    raise BadRequest(f"{f}: expected one JSON file in the zip, found {len(inner)}")
                text = z.read(inner[0]).decode("utf-8")
        except (OSError, zipfile.BadZipFile) as exc:
            raise BadRequest(f"cannot read {f}: {exc}") from None
        label = f"{f.name}!{inner[0]}"
        rows: dict[str, tuple[float, int, dict[str, Any]]] = {}
        try:
            for k, (line, rec) in enumerate(iter_json_array(text)):
                if not isinstance(rec, dict):
                    issues.add(
                        label,
                        line,
                        f"record #{k} is a {type(rec).__name__}, not an object: {str(rec)[:40]!r}",
                    )
                    continue
                try:
                    qid = str(rec["question_id"])
                    answer = rec["answer"]
                    rec["question"]  # noqa: B018 - presence check
                except KeyError as exc:
                    issues.add(label, line, f"record #{k}: missing field {exc}")
                    continue
                if qid in rows:
                    issues.add(label, line, f"record #{k}: duplicate question_id {qid}")
                    continue
                out = rec.get("generated_text", rec.get("model_outputs")) or ""
                correct = 1.0 if rec.get("pred") is not None and rec.get("pred") == answer else 0.0
                rows[qid] = (correct, len(str(out)), rec)
        except ValueError as exc:
            raise BadRequest(f"{label}: invalid JSON: {exc}") from None
        per_model[mdl] = rows
    common = set.intersection(*(set(r) for r in per_model.values())) if per_model else set()
    ids = sorted(common, key=lambda q: (int(q) if q.isdigit() else math.inf, q))
    first = per_model[chosen[0]] if chosen else {}
    texts = [mmlu_text(first[q][2]) for q in ids]
    cats = [str(first[q][2].get("category", "")) for q in ids]
    quality = np.array([[per_model[mdl][q][0] for mdl in chosen] for q in ids]).reshape(len(ids), len(chosen))
    chars = np.array([[per_model[mdl][q][1] for mdl in chosen] for q in ids], dtype=np.float64).reshape(
        len(ids), len(chosen)
    )
    prompt_tok = prices.tokens(np.array([len(t) for t in texts], dtype=np.float64))
    cost = (
        np.column_stack(
            [prices.price(mdl).cost(prompt_tok, prices.tokens(chars[:, j])) for j, mdl in enumerate(chosen)]
        )
        if ids
        else np.zeros((0, len(chosen)))
    )
    mat = OutcomeMatrix(
        query_ids=np.array(ids, dtype=object),
        texts=tuple(texts),
        models=tuple(chosen),
        quality=quality,
        cost=cost,
        categories=np.array(cats, dtype=object),
        response_chars=chars,
        source="mmlu-pro",
        cost_note=(
            f"price table (eval/prices.yaml) × tokens estimated as ceil(chars / "
            f"{prices.chars_per_token:g}); prompt = question + options, completion = generated text"
        ),
        issues=tuple(issues.items),
    )
    return _limit(mat, limit)


def load_routerbench(
    paths: Sequence[str | Path],
    *,
    models: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = False,
    prices: PriceTable | None = None,
) -> OutcomeMatrix:
    del prices  # RouterBench carries real per-query costs
    files = _expand(paths, ["*.csv"])
    csv.field_size_limit(1 << 30)
    issues = _Issues(strict)
    ids: list[str] = []
    texts: list[str] = []
    cats: list[str] = []
    q_rows: list[list[float]] = []
    c_rows: list[list[float]] = []
    r_rows: list[list[float]] = []
    model_list: list[str] | None = None
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise BadRequest(f"{f}: empty CSV") from None
            file_models = [h[: -len("|total_cost")] for h in header if h.endswith("|total_cost")]
            if not file_models:
                raise BadRequest(f"{f}: no '<model>|total_cost' columns; not a RouterBench CSV")
            if model_list is None:
                model_list = _pick_models(file_models, models)
            missing = [mdl for mdl in model_list if mdl not in file_models or mdl not in header]
            if missing:
                raise BadRequest(f"{f}: model column(s) missing: {', '.join(missing)}")
            col = {h: i for i, h in enumerate(header)}
            for name in ("prompt", "sample_id"):
                if name not in col:
                    raise BadRequest(f"{f}: missing column {name!r}")
            start = reader.line_num + 1
            for row in reader:
                line, start = start, reader.line_num + 1
                if len(row) != len(header):
                    issues.add(f, line, f"{len(row)} fields, header has {len(header)}")
                    continue
                try:
                    prompt = ast.literal_eval(row[col["prompt"]])
                    if isinstance(prompt, str):
                        prompt = [prompt]
                    if not isinstance(prompt, list | tuple) or not all(isinstance(p, str) for p in prompt):
                        raise ValueError("prompt is not a list of strings")
                    qs = [_float01(row[col[mdl]]) for mdl in model_list]
                    cs = [float(row[col[f"{mdl}|total_cost"]]) for mdl in model_list]
                    if not all(math.isfinite(c) and c >= 0 for c in cs):
                        raise ValueError("negative or non-finite cost")
                except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                    issues.add(f, line, f"{type(exc).__name__}: {str(exc)[:120]}")
                    continue
                resp = [
                    len(row[col[f"{mdl}|model_response"]]) if f"{mdl}|model_response" in col else 0
                    for mdl in model_list
                ]
                ids.append(row[col["sample_id"]])
                texts.append("\n\n".join(prompt))
                cats.append(row[col["eval_name"]] if "eval_name" in col else f.stem)
                q_rows.append(qs)
                c_rows.append(cs)
                r_rows.append([float(x) for x in resp])
    assert model_list is not None
    mm = len(model_list)
    mat = OutcomeMatrix(
        query_ids=np.array(ids, dtype=object),
        texts=tuple(texts),
        models=tuple(model_list),
        quality=np.array(q_rows, dtype=np.float64).reshape(-1, mm),
        cost=np.array(c_rows, dtype=np.float64).reshape(-1, mm),
        categories=np.array(cats, dtype=object),
        response_chars=np.array(r_rows).reshape(-1, mm),
        source="routerbench",
        cost_note="real per-query cost in USD from RouterBench (<model>|total_cost)",
        issues=tuple(issues.items),
    )
    return _limit(mat, limit)


def _routerdc_category(path: Path) -> str:
    return re.sub(r"[-_]?train$", "", path.stem) or path.stem


def load_routerdc(
    paths: Sequence[str | Path],
    *,
    models: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = False,
    prices: PriceTable | None = None,
) -> OutcomeMatrix:
    files = [f for f in _expand(paths, ["*train*.json"]) if f.suffix == ".json"]
    prices = prices or load_prices("routerdc")
    issues = _Issues(strict)
    ids: list[str] = []
    texts: list[str] = []
    cats: list[str] = []
    q_rows: list[list[float]] = []
    model_list: list[str] | None = None
    for f in files:
        cat = _routerdc_category(f)
        try:
            elements = list(iter_json_array(f.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise BadRequest(f"{f}: cannot read JSON: {exc}") from None
        for k, (line, rec) in enumerate(elements):
            if (
                not isinstance(rec, dict)
                or not isinstance(rec.get("question"), str)
                or not isinstance(rec.get("scores"), dict)
            ):
                issues.add(f, line, "record needs a string 'question' and an object 'scores'")
                continue
            if model_list is None:
                model_list = _pick_models(list(rec["scores"]), models)
                for mdl in model_list:
                    prices.price(mdl)
            try:
                qs = [_float01(rec["scores"][mdl]) for mdl in model_list]
            except KeyError as exc:
                issues.add(f, line, f"no score for model {exc}")
                continue
            except (TypeError, ValueError) as exc:
                issues.add(f, line, str(exc))
                continue
            ids.append(f"{cat}:{k}")
            texts.append(rec["question"])
            cats.append(cat)
            q_rows.append(qs)
    if model_list is None:
        raise BadRequest("no usable RouterDC records")
    prompt_tok = prices.tokens(np.array([len(t) for t in texts], dtype=np.float64))
    out_tok = float(prices.default_output_tokens)
    cost = (
        np.column_stack([prices.price(mdl).cost(prompt_tok, out_tok) for mdl in model_list])
        if texts
        else np.zeros((0, len(model_list)))
    )
    mat = OutcomeMatrix(
        query_ids=np.array(ids, dtype=object),
        texts=tuple(texts),
        models=tuple(model_list),
        quality=np.array(q_rows, dtype=np.float64).reshape(-1, len(model_list)),
        cost=cost,
        categories=np.array(cats, dtype=object),
        source="routerdc",
        cost_note=(
            f"no costs in RouterDC: price by parameter count (eval/prices.yaml) × (prompt tokens "
            f"≈ chars/{prices.chars_per_token:g} + {prices.default_output_tokens} assumed completion "
            "tokens)"
        ),
        issues=tuple(issues.items),
    )
    return _limit(mat, limit)


def load_alpaca_eval(
    paths: Sequence[str | Path],
    *,
    models: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = False,
    prices: PriceTable | None = None,
) -> OutcomeMatrix:
    files = _expand(paths, ["annotations.json"])
    prices = prices or load_prices("alpaca-eval")
    issues = _Issues(strict)
    per_model: dict[str, dict[str, tuple[float, float, str]]] = {}
    for f in files:
        try:
            elements = list(iter_json_array(f.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise BadRequest(f"{f}: cannot read JSON: {exc}") from None
        for line, rec in elements:
            try:
                if not isinstance(rec, dict):
                    raise ValueError("record is not an object")
                mdl = str(rec["generator_2"])
                instr = str(rec["instruction"])
                pref = float(rec["preference"])
                if not math.isfinite(pref):
                    raise ValueError("non-finite preference")
            except (KeyError, TypeError, ValueError) as exc:
                issues.add(f, line, f"{type(exc).__name__}: {exc}")
                continue
            rows = per_model.setdefault(mdl, {})
            if instr in rows:
                issues.add(f, line, f"duplicate instruction for {mdl}")
                continue
            q = min(1.0, max(0.0, pref - 1.0))
            rows[instr] = (q, float(len(str(rec.get("output_2") or ""))), str(rec.get("dataset", "")))
    chosen = _pick_models(sorted(per_model), models)
    for mdl in chosen:
        prices.price(mdl)
    common = set.intersection(*(set(per_model[mdl]) for mdl in chosen)) if chosen else set()
    instrs = sorted(common)
    first = per_model[chosen[0]]
    mm = len(chosen)
    chars = np.array([[per_model[mdl][s][1] for mdl in chosen] for s in instrs]).reshape(-1, mm)
    prompt_tok = prices.tokens(np.array([len(s) for s in instrs], dtype=np.float64))
    cost = (
        np.column_stack(
            [prices.price(mdl).cost(prompt_tok, prices.tokens(chars[:, j])) for j, mdl in enumerate(chosen)]
        )
        if instrs
        else np.zeros((0, mm))
    )
    mat = OutcomeMatrix(
        query_ids=np.array([f"alpaca:{i}" for i in range(len(instrs))], dtype=object),
        texts=tuple(instrs),
        models=tuple(chosen),
        quality=np.array([[per_model[mdl][s][0] for mdl in chosen] for s in instrs]).reshape(-1, mm),
        cost=cost,
        categories=np.array([first[s][2] for s in instrs], dtype=object),
        response_chars=chars,
        source="alpaca-eval",
        cost_note=(
            "price table (eval/prices.yaml) × tokens ≈ ceil(chars / "
            f"{prices.chars_per_token:g}) of instruction and output; AlpacaEval's price_per_example "
            "is the judge's price, not the generator's"
        ),
        issues=tuple(issues.items),
    )
    return _limit(mat, limit)


def _load_generic_jsonl(paths: Sequence[str | Path], **kw: Any) -> OutcomeMatrix:
    from eval.outcomes_generic import load_jsonl  # the generic format lives in its own module

    return load_jsonl(paths, **kw)


def _load_generic_csv(paths: Sequence[str | Path], **kw: Any) -> OutcomeMatrix:
    from eval.outcomes_generic import load_csv

    return load_csv(paths, **kw)


Loader = Callable[..., OutcomeMatrix]
LOADERS: dict[str, Loader] = {
    "mmlu-pro": load_mmlu_pro,
    "routerbench": load_routerbench,
    "routerdc": load_routerdc,
    "alpaca-eval": load_alpaca_eval,
    "jsonl": _load_generic_jsonl,  # generic outcome format, eval/outcomes_generic.py
    "csv": _load_generic_csv,
}


def load_outcomes(
    paths: Sequence[str | Path],
    fmt: str,
    *,
    models: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = False,
    prices: PriceTable | None = None,
) -> OutcomeMatrix:
    """Load `paths` in format `fmt` (a key of LOADERS) into one OutcomeMatrix."""
    try:
        loader = LOADERS[fmt]
    except KeyError:
        raise BadRequest(f"unknown format {fmt!r}; known: {', '.join(LOADERS)}") from None
    if not paths:
        raise BadRequest("no data paths given")
    mat = loader(paths, models=models, limit=limit, strict=strict, prices=prices)
    if mat.n == 0:
        raise BadRequest(
            f"no usable queries in {', '.join(map(str, paths))} ({len(mat.issues)} malformed rows)"
        )
    return mat


__all__ = [
    "LOADERS",
    "OutcomeMatrix",
    "Price",
    "PriceTable",
    "RowIssue",
    "iter_json_array",
    "load_outcomes",
    "load_prices",
    "resolve_data_path",
]
