"""The generic outcome format (`--format jsonl` or `--format csv`): any team's own logs of which model
answered what, how well and at what price.

JSONL, one query per line:

    {"id": "q1", "prompt": "Is 91 prime?", "category": "math",
     "outcomes": {"gpt-4": {"quality": 1.0, "cost_usd": 0.0031},
                  "mixtral": {"quality": 0.0, "prompt_tokens": 12, "completion_tokens": 80}}}

- ``prompt``: a string, or an OpenAI ``messages`` list (the routed text is then built as the service
  builds it: the last user turn, then earlier user turns, most recent first, cut to half its length);
- ``category``: optional; without it the category-based policies cannot be evaluated;
- ``outcomes``: per model, ``quality`` in [0, 1] and either ``cost_usd`` or ``prompt_tokens`` +
  ``completion_tokens`` (priced with the price table: ``generic`` then ``mmlu-pro`` section of
  eval/outcomes/prices.yaml, or the file given as ``prices``). ``completion_tokens`` with ``cost_usd`` is
  kept as
  the answer length (the quality head learns expected lengths from it).

CSV: columns ``id``, ``prompt`` (plain text, or a JSON messages list), optional ``category``, and per
model ``<model>|quality`` plus ``<model>|cost_usd`` or ``<model>|prompt_tokens`` and
``<model>|completion_tokens``.

Every model must appear in every row (a row missing a selected model is malformed). Malformed rows are
reported with file and line like the other loaders' (eval/outcomes/)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.outcomes.common import Issues, LoadRequest, float01, pick_models
from eval.outcomes.matrix import OutcomeMatrix
from eval.outcomes.prices import PriceTable, load_prices
from router.errors import BadRequest
from router.quality import CHARS_PER_TOKEN
from router.text import conversation_text

FIELDS = ("quality", "cost_usd", "prompt_tokens", "completion_tokens")


def messages_text(messages: Sequence[Any]) -> str:
    """The routed text of an OpenAI messages list, by the service's rule (`router.text.conversation_text`);
    a row must have a user turn with text."""
    turns: list[tuple[str, str]] = []
    for m in messages:
        if not isinstance(m, Mapping) or "role" not in m:
            raise ValueError("a message must be an object with 'role' and 'content'")
        content = m.get("content")
        if isinstance(content, list):  # content parts: the text ones, joined as the service joins them
            content = "\n".join(
                str(p.get("text") or "")
                for p in content
                if isinstance(p, Mapping) and p.get("type") == "text"
            )
        turns.append((str(m["role"]), str(content or "")))
    if not any(role == "user" and text.strip() for role, text in turns):
        raise ValueError("no user turn with text in 'messages'")
    return conversation_text(turns)


def prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("empty 'prompt'")
        return prompt
    if isinstance(prompt, list):
        return messages_text(prompt)
    raise ValueError("'prompt' must be a string or an OpenAI messages list")


def _default_prices() -> PriceTable:
    generic = load_prices("generic")
    fallback = load_prices("mmlu-pro")
    return PriceTable(
        generic.chars_per_token, {**fallback.models, **generic.models}, generic.default_output_tokens
    )


def _cell(model: str, o: Any, prices: PriceTable | None) -> tuple[float, float, float | None]:
    """(quality, cost_usd, completion tokens or None) of one model's outcome."""
    if not isinstance(o, Mapping):
        raise ValueError(f"outcome of {model!r} is not an object")
    if "quality" not in o:
        raise ValueError(f"outcome of {model!r} has no 'quality'")
    q = float01(o["quality"])
    ct = o.get("completion_tokens")
    ct_f = None if ct in (None, "") else float(ct)
    if ct_f is not None and (not math.isfinite(ct_f) or ct_f < 0):
        raise ValueError(f"completion_tokens of {model!r} must be >= 0")
    if o.get("cost_usd") not in (None, ""):
        cost = float(o["cost_usd"])
    elif o.get("prompt_tokens") not in (None, "") and ct_f is not None:
        if prices is None:
            raise ValueError("no price table")
        pt = float(o["prompt_tokens"])
        if not math.isfinite(pt) or pt < 0:
            raise ValueError(f"prompt_tokens of {model!r} must be >= 0")
        cost = float(prices.price(model).cost(pt, ct_f))
    else:
        raise ValueError(f"outcome of {model!r} needs 'cost_usd' or 'prompt_tokens' + 'completion_tokens'")
    if not math.isfinite(cost) or cost < 0:
        raise ValueError(f"cost_usd of {model!r} must be finite and >= 0")
    return q, cost, ct_f


class _Rows:
    """Accumulates parsed rows; the model list is fixed by the first good row (or `models`)."""

    def __init__(self, models: Sequence[str] | None, prices: PriceTable | None) -> None:
        self.wanted = list(models) if models else None
        self.models: list[str] | None = None
        self.prices = prices
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.cats: list[str | None] = []
        self.q: list[list[float]] = []
        self.c: list[list[float]] = []
        self.t: list[list[float | None]] = []

    def add(self, rid: Any, prompt: Any, category: Any, outcomes: Any) -> None:
        if rid in (None, ""):
            raise ValueError("missing 'id'")
        text = prompt_text(prompt)
        if not isinstance(outcomes, Mapping) or not outcomes:
            raise ValueError("'outcomes' must be a non-empty object {model: {quality, cost_usd | tokens}}")
        if self.models is None:
            self.models = pick_models(sorted(outcomes), self.wanted)
        missing = [m for m in self.models if m not in outcomes]
        if missing:
            raise ValueError(f"no outcome for model(s) {', '.join(missing)}")
        if self.prices is None and any(
            isinstance(outcomes[m], Mapping) and outcomes[m].get("cost_usd") in (None, "")
            for m in self.models
        ):
            self.prices = _default_prices()
        cells = [_cell(m, outcomes[m], self.prices) for m in self.models]
        self.ids.append(str(rid))
        self.texts.append(text)
        self.cats.append(None if category in (None, "") else str(category))
        self.q.append([x[0] for x in cells])
        self.c.append([x[1] for x in cells])
        self.t.append([x[2] for x in cells])

    def matrix(self, issues: Issues, source: str) -> OutcomeMatrix:
        models = self.models or list(self.wanted or [])
        m = len(models)
        have_cats = bool(self.cats) and all(c is not None for c in self.cats)
        have_tokens = bool(self.t) and all(x is not None for row in self.t for x in row)
        return OutcomeMatrix(
            query_ids=np.array(self.ids, dtype=object),
            texts=tuple(self.texts),
            models=tuple(models),
            quality=np.array(self.q, dtype=np.float64).reshape(-1, m),
            cost=np.array(self.c, dtype=np.float64).reshape(-1, m),
            categories=np.array(self.cats, dtype=object) if have_cats else None,
            response_chars=(np.array(self.t, dtype=np.float64) * CHARS_PER_TOKEN).reshape(-1, m)
            if have_tokens
            else None,
            source=source,
            cost_note="generic outcome file: cost_usd as given, or price table × the given token counts",
            issues=tuple(issues.items),
        )


_ERRORS = (ValueError, TypeError, KeyError, BadRequest)


def load_jsonl(req: LoadRequest) -> OutcomeMatrix:
    files, issues = req.files(["*.jsonl"]), req.issues
    rows = _Rows(req.models, req.prices)
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, Mapping):
                        raise ValueError("a row must be a JSON object")
                    rows.add(rec.get("id"), rec.get("prompt"), rec.get("category"), rec.get("outcomes"))
                except _ERRORS as exc:
                    if isinstance(exc, BadRequest) and rows.models is None:
                        raise
                    issues.add(f, line_no, f"{type(exc).__name__}: {str(exc)[:160]}")
    return rows.matrix(issues, "jsonl")


def load_csv(req: LoadRequest) -> OutcomeMatrix:
    files, issues = req.files(["*.csv"]), req.issues
    csv.field_size_limit(1 << 30)
    rows = _Rows(req.models, req.prices)
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            for need in ("id", "prompt"):
                if need not in header:
                    raise BadRequest(f"{f}: missing column {need!r}")
            file_models = sorted({h.split("|", 1)[0] for h in header if h.endswith("|quality")})
            if not file_models:
                raise BadRequest(f"{f}: no '<model>|quality' columns; not a generic outcome CSV")
            line = 2
            for rec in reader:
                start, line = line, reader.line_num + 1
                try:
                    prompt: Any = rec.get("prompt") or ""
                    if prompt.lstrip().startswith("[{"):
                        prompt = json.loads(prompt)
                    outcomes = {
                        m: {k: rec.get(f"{m}|{k}") for k in FIELDS if rec.get(f"{m}|{k}") not in (None, "")}
                        for m in file_models
                    }
                    rows.add(rec.get("id"), prompt, rec.get("category"), outcomes)
                except _ERRORS as exc:
                    if isinstance(exc, BadRequest) and rows.models is None:
                        raise
                    issues.add(f, start, f"{type(exc).__name__}: {str(exc)[:160]}")
    return rows.matrix(issues, "csv")


def write_jsonl(mat: OutcomeMatrix, path: str | Path) -> Path:
    """Write `mat` in the generic JSONL format (costs as cost_usd; answer lengths as completion_tokens)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for i in range(mat.n):
            outcomes: dict[str, dict[str, float]] = {}
            for j, m in enumerate(mat.models):
                cell = {"quality": float(mat.quality[i, j]), "cost_usd": float(mat.cost[i, j])}
                if mat.response_chars is not None:
                    cell["completion_tokens"] = float(mat.response_chars[i, j] / CHARS_PER_TOKEN)
                outcomes[m] = cell
            rec: dict[str, Any] = {"id": str(mat.query_ids[i]), "prompt": mat.texts[i], "outcomes": outcomes}
            if mat.categories is not None:
                rec["category"] = str(mat.categories[i])
            fh.write(json.dumps(rec) + "\n")
    return out
