"""``mmlu-pro``: TIGER-AI-Lab MMLU-Pro model-output zips (one JSON list per model), and the one reader
of those zips (eval/data/datasets.py reads the same files for router training).

Correct = ``pred == answer``, a null ``pred`` is wrong. Costs come from ``eval/outcomes/prices.yaml`` (USD
per 1M
tokens) times token counts estimated from characters: prompt = question + options as the router sees
it, completion = the model's generated text. Only the questions answered by every selected model are
kept."""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from eval.outcomes.common import Issues, LoadRequest, pick_models
from eval.outcomes.json_scan import iter_json_array
from eval.outcomes.matrix import OutcomeMatrix
from eval.outcomes.prices import PriceTable, column_costs, load_prices
from router.errors import BadRequest

_MMLU_NAME = re.compile(r"model_outputs_(.+)_5shots\.zip$")

#: question_id -> (correct 0/1, answer length in characters, the record)
_Answers = dict[str, tuple[float, int, dict[str, Any]]]


def read_model_outputs(path: Path) -> tuple[str, str]:
    """(name of the JSON file inside, its text) of one model-output zip; BadRequest naming the zip when
    it is not a readable zip holding exactly one UTF-8 JSON file."""
    try:
        with zipfile.ZipFile(path) as z:
            inner = [nm for nm in z.namelist() if nm.endswith(".json")]
            if len(inner) != 1:
                raise BadRequest(f"{path}: expected one JSON file in the zip, found {len(inner)}")
            return inner[0], z.read(inner[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile) as exc:
        raise BadRequest(f"{path}: not a readable zip ({exc})") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{path}: corrupt JSON inside the zip ({exc})") from None


def mmlu_text(rec: dict[str, Any]) -> str:
    """The question as a router sees it: the question, then the lettered options."""
    opts = rec.get("options") or []
    letters = "ABCDEFGHIJKLMNOP"
    lines = [str(rec["question"]).strip()]
    lines += [f"{letters[i]}. {o}" for i, o in enumerate(opts) if i < len(letters)]
    return "\n".join(lines)


def _answers(path: Path, issues: Issues) -> _Answers:
    """One model's graded answers; malformed and duplicate records become issues."""
    inner, text = read_model_outputs(path)
    label = f"{path.name}!{inner}"
    rows: _Answers = {}
    try:
        for k, (line, rec) in enumerate(iter_json_array(text)):
            if not isinstance(rec, dict):
                issues.add(
                    label, line, f"record #{k} is a {type(rec).__name__}, not an object: {str(rec)[:40]!r}"
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
    return rows


def _matrix(
    per_model: dict[str, _Answers], chosen: list[str], prices: PriceTable, issues: Issues
) -> OutcomeMatrix:
    """The questions every chosen model answered, in question_id order."""
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
    return OutcomeMatrix(
        query_ids=np.array(ids, dtype=object),
        texts=tuple(texts),
        models=tuple(chosen),
        quality=quality,
        cost=column_costs(prices, chosen, prompt_tok, prices.tokens(chars)),
        categories=np.array(cats, dtype=object),
        response_chars=chars,
        source="mmlu-pro",
        cost_note=(
            f"price table (eval/outcomes/prices.yaml) × tokens estimated as ceil(chars / "
            f"{prices.chars_per_token:g}); prompt = question + options, completion = generated text"
        ),
        issues=tuple(issues.items),
    )


def load_mmlu_pro(req: LoadRequest) -> OutcomeMatrix:
    files = [f for f in req.files(["model_outputs_*_5shots.zip"]) if _MMLU_NAME.search(f.name)]
    by_model = {_MMLU_NAME.search(f.name).group(1): f for f in files}  # type: ignore[union-attr]
    chosen = pick_models(sorted(by_model), req.models)
    prices = req.prices or load_prices("mmlu-pro")
    for mdl in chosen:
        prices.price(mdl)  # fail before the slow part
    per_model = {mdl: _answers(by_model[mdl], req.issues) for mdl in chosen}
    return _matrix(per_model, chosen, prices, req.issues)
