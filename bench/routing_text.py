"""What reading a long prompt costs (router/text.py::routing_text, which now also finds code, stack traces
and logs pasted without fences) against the embedding it precedes on the request path, in one process.

Prompts: the committed long-prompt sample (tests/router/data/long_prompts.jsonl, built from ../shared/data
by eval.data.long_prompts: a question with a real HumanEval function pasted before or after it, fenced and
unfenced), its bare questions, and two large pastes (a 100 KB timestamped log under a question, one
100 KB line). For each kind: routing_text per call, the fences-only reading it replaced (kept below as
`fences_only`, the previous code), and `SentenceTransformerEmbedder.embed([routing_text(p)])` — the
baseline: the ratio is reading / embedding, measured interleaved in the same run.

Usage: python bench/routing_text.py [--repeat 30]; writes bench/results/routing_text.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, offline_env, pct, table, write  # noqa: E402

SAMPLE = ROOT / "tests" / "router" / "data" / "long_prompts.jsonl"


def fences_only(text: str) -> str:
    """The previous reading, as it was (commit e362086): fenced blocks cut, unfenced code read whole."""
    from router.text import _FENCE, head_tail

    blocks = tuple(m.group(2) for m in _FENCE.finditer(text))
    prose = _FENCE.sub("\n", text) if blocks else text
    instruction = re.sub(r"\n{3,}", "\n\n", prose).strip()
    if not blocks:
        return head_tail(text)
    if instruction:
        return head_tail(instruction)
    return head_tail("\n\n".join(b.strip("\n") for b in blocks))


def kinds() -> dict[str, list[str]]:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    log = "Why does the worker keep failing?\n" + "\n".join(
        f"2026-01-01 10:00:{i % 60:02d} ERROR worker {i}: connection refused;" for i in range(1800)
    )
    return {
        "bare question": [r["bare"] for r in rows],
        "fenced code pasted": [r["question_first"] for r in rows] + [r["code_first"] for r in rows],
        "unfenced code pasted": [r["question_first_unfenced"] for r in rows]
        + [r["code_first_unfenced"] for r in rows],
        "100 KB log under a question": [log],
        "100 KB single line": ["x" * 100_000],
    }


def timed(fn: Any, arg: Any) -> float:
    a = time.perf_counter()
    fn(arg)
    return time.perf_counter() - a


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    offline_env()
    mach = machine()
    print(f"load average at start: {mach['loadavg_at_start']}")
    from router.embedder import SentenceTransformerEmbedder
    from router.text import routing_text

    emb = SentenceTransformerEmbedder("default")
    emb.embed(["warm up"])
    result: dict[str, Any] = {}
    rows = []
    for name, prompts in kinds().items():
        read: list[float] = []
        old: list[float] = []
        embed: list[float] = []
        for _ in range(args.repeat):
            for p in prompts:  # interleaved: the three paths see the same load
                read.append(timed(routing_text, p))
                old.append(timed(fences_only, p))
                embed.append(timed(emb.embed, [routing_text(p)]))
        r = {
            "n_prompts": len(prompts),
            "mean_chars": round(sum(map(len, prompts)) / len(prompts)),
            "routing_text_p50_ms": pct(read, 50),
            "fences_only_p50_ms": pct(old, 50),
            "embed_p50_ms": pct(embed, 50),
        }
        r["routing_text_over_embed"] = r["routing_text_p50_ms"] / r["embed_p50_ms"]
        result[name] = r
        rows.append(
            [name, r["mean_chars"], r["routing_text_p50_ms"], r["fences_only_p50_ms"], r["embed_p50_ms"],
             f"{r['routing_text_over_embed']:.2%}"]
        )  # fmt: skip
    print("\nReading a prompt (routing_text) vs embedding what it reads, p50 ms per prompt")
    print(
        table(["prompt", "chars", "routing_text", "fences only (before)", "embed", "reading / embed"], rows)
    )
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average: start {mach['loadavg_at_start']}, end {load_end}")
    doc = {"benchmark": "routing_text", "machine": {**mach, "loadavg_at_end": load_end}, "kinds": result}
    print(f"wrote {write('routing_text', doc)}")


if __name__ == "__main__":
    main()
