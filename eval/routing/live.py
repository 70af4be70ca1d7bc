"""Live evaluation against a running CoE Router service (`coe eval live`).

1. every query goes to `POST /v1/route` (the decision only: chosen experts, categories);
2. queries are grouped by their first chosen expert and each group is sent to
   `POST /v1/chat/completions` with `model=<expert>` (direct to that expert), the groups concurrently —
   Symbolic-MoE's batching: one expert's queries together, so a vLLM expert batches them;
3. answers are scored against references: multiple choice by the extracted letter, GSM8K by the final
   number (after `####` in the reference), JSONL by the reference letter or number it holds.

Only the OpenAI-compatible HTTP API is used (httpx), so it works against any deployment."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.outcomes import mmlu_text, resolve_data_path
from experts.answers import LETTERS, extract_letter, extract_number, normalise_number
from router.errors import BadRequest, CoeError, ExpertError

LIVE_FORMATS = ("mmlu-pro", "gsm8k", "jsonl")


@dataclass(frozen=True, slots=True)
class LiveItem:
    text: str
    reference: str  # a letter (multiple choice) or a number
    kind: str  # "choice" | "number"
    category: str = ""


@dataclass(frozen=True, slots=True)
class LiveOutcome:
    item: LiveItem
    expert: str
    answer: str
    predicted: str | None
    correct: bool
    error: str | None = None


# ---------------------------------------------------------------------------------------------- answers
# experts/answers.py holds the rules, so `vote` and this scoring agree on what a reply's answer is


def score(item: LiveItem, answer: str) -> tuple[str | None, bool]:
    pred = extract_letter(answer) if item.kind == "choice" else extract_number(answer)
    return pred, pred is not None and pred == item.reference


# ---------------------------------------------------------------------------------------------- data


def load_live(path: str | Path, fmt: str, limit: int | None = None) -> list[LiveItem]:
    if fmt not in LIVE_FORMATS:
        raise BadRequest(f"unknown --format {fmt!r}; known: {', '.join(LIVE_FORMATS)}")
    p = resolve_data_path(path)
    if not p.exists():
        raise BadRequest(f"data path not found: {path}")
    items: list[LiveItem] = []
    if fmt == "mmlu-pro":
        files = sorted(p.glob("*.zip")) if p.is_dir() else [p]
        if not files:
            raise BadRequest(f"no MMLU-Pro zips under {p}")
        with zipfile.ZipFile(files[0]) as z:
            recs = json.loads(z.read([n for n in z.namelist() if n.endswith(".json")][0]))
        for r in recs:
            if isinstance(r, dict) and r.get("answer") in tuple(LETTERS):
                text = mmlu_text(r) + "\n\nAnswer with the letter of the correct option: 'The answer is (X)'."
                items.append(LiveItem(text, r["answer"], "choice", str(r.get("category", ""))))
            if limit and len(items) >= limit:
                break
        return items
    for ln, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if fmt == "gsm8k":
                ref = normalise_number(str(r["answer"]).rsplit("####", 1)[-1])
                if ref is None:
                    raise ValueError("no final number after ####")
                items.append(
                    LiveItem(
                        str(r["question"]) + "\n\nEnd with the final answer after '####'.",
                        ref,
                        "number",
                        "math",
                    )
                )
            else:
                text = str(r.get("text") or r.get("question") or r["prompt"])
                ref_raw = str(r.get("answer") if r.get("answer") is not None else r["reference"]).strip()
                if len(ref_raw) == 1 and ref_raw.upper() in LETTERS:
                    items.append(LiveItem(text, ref_raw.upper(), "choice", str(r.get("category", ""))))
                else:
                    num = extract_number(ref_raw)
                    if num is None:
                        raise ValueError("reference is neither a letter nor a number")
                    items.append(LiveItem(text, num, "number", str(r.get("category", ""))))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest(f"{p}:{ln}: malformed row: {exc}") from None
        if limit and len(items) >= limit:
            break
    return items


# ---------------------------------------------------------------------------------------------- client


_RETRIES = 8


async def _post(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    # 429 (an expert's queue is full) and 503 are back-pressure, not failures: wait and retry, as an
    # OpenAI client would, so a batch larger than the experts' concurrency loses no query.
    for attempt in range(_RETRIES + 1):
        try:
            r = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise ExpertError(f"cannot reach the service at {url}: {type(exc).__name__}: {exc}") from None
        if r.status_code not in (429, 503) or attempt == _RETRIES:
            break
        try:
            delay = float(r.headers.get("retry-after", ""))
        except ValueError:
            delay = min(30.0, 0.5 * 2**attempt)
        await asyncio.sleep(delay)
    if r.status_code >= 400:
        try:
            msg = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = r.text[:200]
        raise ExpertError(f"{url} answered {r.status_code}: {msg}", status_code=r.status_code)
    return r.json()


async def run_live(
    items: Sequence[LiveItem],
    *,
    url: str = "http://127.0.0.1:8000",
    api_key: str | None = None,
    concurrency: int = 8,
    max_tokens: int = 512,
    transport: Any = None,
    progress: bool = True,
) -> list[LiveOutcome]:
    import httpx
    from tqdm.auto import tqdm

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = url.rstrip("/")
    sem = asyncio.Semaphore(max(1, concurrency))
    async with httpx.AsyncClient(
        headers=headers, timeout=httpx.Timeout(300.0), transport=transport
    ) as client:

        async def route(item: LiveItem) -> str:
            async with sem:
                d = await _post(
                    client,
                    f"{base}/v1/route",
                    {"model": "auto", "messages": [{"role": "user", "content": item.text}]},
                )
            experts = d.get("experts") or []
            if not experts:
                raise BadRequest("the service returned a route with no experts")
            return str(experts[0]["name"] if isinstance(experts[0], dict) else experts[0])

        with tqdm(total=len(items), desc="routing", disable=not progress, leave=False) as bar:

            async def routed(item: LiveItem) -> str:
                e = await route(item)
                bar.update(1)
                return e

            experts = await asyncio.gather(*(routed(it) for it in items))
        groups: dict[str, list[int]] = defaultdict(list)
        for i, e in enumerate(experts):
            groups[e].append(i)

        outcomes: list[LiveOutcome | None] = [None] * len(items)
        bar = tqdm(total=len(items), desc="answering", disable=not progress, leave=False)

        async def answer(i: int, expert: str) -> None:
            item = items[i]
            try:
                async with sem:
                    d = await _post(
                        client,
                        f"{base}/v1/chat/completions",
                        {
                            "model": expert,
                            "max_tokens": max_tokens,
                            "temperature": 0,
                            "messages": [{"role": "user", "content": item.text}],
                        },
                    )
                text = str(d["choices"][0]["message"]["content"] or "")
                pred, ok = score(item, text)
                outcomes[i] = LiveOutcome(item, expert, text, pred, ok)
            except (CoeError, KeyError, IndexError, TypeError) as exc:
                outcomes[i] = LiveOutcome(item, expert, "", None, False, error=str(exc)[:200])
            bar.update(1)

        async def group(expert: str, idx: list[int]) -> None:
            await asyncio.gather(*(answer(i, expert) for i in idx))

        await asyncio.gather(*(group(e, idx) for e, idx in groups.items()))
        bar.close()
    return [o for o in outcomes if o is not None]


def summarise(outcomes: Sequence[LiveOutcome]) -> dict[str, Any]:
    """Accuracy overall, per expert and per category (errors count as wrong and are counted)."""

    def acc(rows: Sequence[LiveOutcome]) -> dict[str, Any]:
        n = len(rows)
        return {
            "n": n,
            "correct": sum(o.correct for o in rows),
            "accuracy": (sum(o.correct for o in rows) / n) if n else None,
            "errors": sum(o.error is not None for o in rows),
        }

    by_e: dict[str, list[LiveOutcome]] = defaultdict(list)
    by_c: dict[str, list[LiveOutcome]] = defaultdict(list)
    for o in outcomes:
        by_e[o.expert].append(o)
        by_c[o.item.category or "-"].append(o)
    return {
        "overall": acc(outcomes),
        "per_expert": {e: acc(v) for e, v in sorted(by_e.items())},
        "per_category": {c: acc(v) for c, v in sorted(by_c.items())},
    }
