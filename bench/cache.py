"""The semantic response cache: hit rate, false-hit rate and added latency.

Part 1, offline (the router's own embedder, in process): MT-Bench + Vicuna-bench first turns
(../shared/data/mt_bench) and paraphrases of each made deterministically (casing, punctuation, a
politeness prefix, a "Question:" frame, and the two halves of a sentence swapped around its first comma);
for each threshold, the share of paraphrases whose cached original is within it (hits), and the share of
distinct questions (the other MT-Bench/Vicuna questions and 400 MMLU-Pro questions) that would hit a
*different* cached question (false hits), and the harder case: 200 GSM8K problems with every number
changed (a different question in the same words) against their originals.

Part 2, online (`deploy.ops.local.start`, one-hop, COE_CACHE=semantic at the chosen threshold, the instant
stub of bench/gateway_overhead.py as the expert): the originals (misses, stored), then the paraphrases
(hits or misses), then the originals again with `routing.cache: false` (the cache skipped), all at
temperature 0, concurrency 1. Latency of hits and misses against the skipped requests of the same run.

Usage: python bench/cache.py [--thresholds 0.85 0.9 0.95 0.97] [--threshold 0.95] [--no-online]
Writes bench/results/cache.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import finish, machine, offline_env, pct, table  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def say(msg: str) -> None:
    print(f"[cache] {msg}", flush=True)


def questions() -> list[str]:
    """MT-Bench and Vicuna-bench first turns, duplicates removed (a few appear in both sets)."""
    out = []
    for name in ("mt_bench_question.jsonl", "vicuna_bench_question.jsonl"):
        path = SHARED / "mt_bench" / name
        out += [json.loads(line)["turns"][0] for line in path.read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(out))


def number_variants(limit: int = 200) -> tuple[list[str], list[str]]:
    """GSM8K problems and the same problems with every number changed (n -> n + 1): a different question
    in nearly the same words, which a semantic cache must not answer from the original."""
    rows = [
        json.loads(line)["question"] for line in (SHARED / "gsm8k" / "train.jsonl").read_text().splitlines()
    ]
    rows = [q for q in rows if re.search(r"\d", q)][:limit]
    return rows, [re.sub(r"\d+", lambda m: str(int(m.group()) + 1), q) for q in rows]


def paraphrases(q: str) -> list[str]:
    """Deterministic rewrites that keep the meaning."""
    base = q.strip()
    bare = re.sub(r"[?.!]+$", "", base)
    out = [
        base.lower(),
        bare + ("." if base.endswith("?") else "?"),
        f"Please answer this: {bare}",
        f"Question: {base}",
    ]
    first, sep, rest = bare.partition(", ")
    if sep and rest:
        out.append(f"{rest[0].upper()}{rest[1:]}, {first[0].lower()}{first[1:]}")
    return out


def offline(thresholds: list[float]) -> tuple[dict[str, Any], list[str], list[list[str]]]:
    from eval.data.datasets import load_mmlu_pro
    from router.embedder import SentenceTransformerEmbedder

    qs = questions()
    paras = [paraphrases(q) for q in qs]
    mmlu = [e.text for e in load_mmlu_pro(SHARED / "mmlu_pro" / "eval_results")]
    random.Random(0).shuffle(mmlu)
    distinct = mmlu[:400]
    emb = SentenceTransformerEmbedder("default")
    say(
        f"embedding {len(qs)} questions, {sum(map(len, paras))} paraphrases, "
        f"{len(distinct)} MMLU-Pro questions"
    )
    q_vec = emb.embed(qs)
    flat = [p for ps in paras for p in ps]
    owner = np.array([i for i, ps in enumerate(paras) for _ in ps])
    p_vec = emb.embed(flat)
    d_vec = emb.embed(distinct)
    sim_p = p_vec @ q_vec.T  # paraphrase x cached originals
    own = sim_p[np.arange(len(flat)), owner]
    best_other_p = np.where(np.arange(len(qs))[None, :] == owner[:, None], -1.0, sim_p).max(axis=1)
    gsm, gsm_changed = number_variants()
    g_sim = np.sum(emb.embed(gsm) * emb.embed(gsm_changed), axis=1)  # each against its own original
    from deploy.pipeline.cache import user_numbers

    same_numbers = np.array(
        [user_numbers([{"role": "user", "content": a}]) == user_numbers([{"role": "user", "content": b}])
         for a, b in zip(gsm, gsm_changed, strict=True)]
    )  # fmt: skip
    sim_q = q_vec @ q_vec.T
    np.fill_diagonal(sim_q, -1.0)
    nearest_q = sim_q.max(axis=1)  # another MT-Bench/Vicuna question cached
    nearest_d = (d_vec @ q_vec.T).max(axis=1)  # an MMLU-Pro question against the cached chat questions
    rows = {}
    for t in thresholds:
        rows[str(t)] = {
            "paraphrase_hit_rate": float(np.mean((own >= t) & (own >= best_other_p))),
            "paraphrase_wrong_hit_rate": float(np.mean((best_other_p >= t) & (best_other_p > own))),
            "false_hit_rate_chat": float(np.mean(nearest_q >= t)),
            "false_hit_rate_mmlu": float(np.mean(nearest_d >= t)),
            "false_hit_rate_numbers_changed": float(np.mean(g_sim >= t)),
            # with the service's number guard (deploy/pipeline/cache.py: the user text's numbers must match)
            "false_hit_rate_numbers_changed_guarded": float(np.mean((g_sim >= t) & same_numbers)),
        }
    stats = {
        "n_questions": len(qs),
        "n_paraphrases": len(flat),
        "n_distinct_mmlu": len(distinct),
        "own_similarity_p50": float(np.median(own)),
        "numbers_changed_similarity_p50": float(np.median(g_sim)),
        "nearest_other_chat_p99": float(np.percentile(nearest_q, 99)),
        "thresholds": rows,
    }
    return stats, qs, paras


async def online(base: str, qs: list[str], paras: list[list[str]]) -> dict[str, Any]:
    import httpx

    def body(text: str, **kw: Any) -> dict[str, Any]:
        return {
            "model": "auto",
            "messages": [{"role": "user", "content": text}],
            "temperature": 0,
            "max_tokens": 8,
            **kw,
        }

    lat: dict[str, list[float]] = {"miss": [], "hit": [], "skip": []}
    async with httpx.AsyncClient(timeout=60) as http:
        for q in qs[:10]:  # warm-up, not measured (other text, cache skipped)
            await http.post(f"{base}/v1/chat/completions", json=body(q[::-1], routing={"cache": False}))
        plan = (
            [(q, {}) for q in qs]
            + [(p, {}) for ps in paras for p in ps]
            + [(q, {"routing": {"cache": False}}) for q in qs]
        )
        for text, extra in plan:
            a = time.perf_counter()
            r = await http.post(f"{base}/v1/chat/completions", json=body(text, **extra))
            dt = time.perf_counter() - a
            r.raise_for_status()
            lat[r.json()["coe"].get("cache", "skip")].append(dt)
    out: dict[str, Any] = {
        k: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for k, v in lat.items()
    }
    out["online_paraphrase_hit_rate"] = (len(lat["hit"])) / max(1, sum(map(len, paras)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.85, 0.9, 0.93, 0.95, 0.97])
    ap.add_argument("--threshold", type=float, default=0.95, help="the one the online part runs with")
    ap.add_argument("--no-online", action="store_true")
    args = ap.parse_args()
    offline_env()
    mach = machine()
    say(f"load average at start: {mach['loadavg_at_start']}")
    stats, qs, paras = offline(args.thresholds)
    rows = [
        [t, f"{r['paraphrase_hit_rate']:.1%}", f"{r['paraphrase_wrong_hit_rate']:.1%}",
         f"{r['false_hit_rate_chat']:.1%}", f"{r['false_hit_rate_mmlu']:.1%}",
         f"{r['false_hit_rate_numbers_changed']:.1%}", f"{r['false_hit_rate_numbers_changed_guarded']:.1%}"]
        for t, r in stats["thresholds"].items()
    ]  # fmt: skip
    print(
        "\nSemantic cache, offline (MiniLM cosine; a hit = the cached original; false = another question's)"
    )
    print(table(["threshold", "paraphrase hits", "paraphrase wrong hits", "false hits (chat)",
                 "false hits (MMLU-Pro)", "GSM8K numbers changed", "same, number guard"], rows))  # fmt: skip
    result: dict[str, Any] = {"offline": stats}
    if not args.no_online:
        sys.path.insert(0, str(ROOT / "bench"))
        from service_overhead import stub_service

        with stub_service("coe-bench-cache-", say, cache="semantic", cache_threshold=args.threshold) as stack:
            on = asyncio.run(online(stack.base, qs, paras))
        skip = on["skip"]["p50_ms"]
        rows = [
            [k, on[k]["n"], on[k]["p50_ms"], on[k]["p99_ms"], f"{on[k]['p50_ms'] / skip:.2f}x"]
            for k in ("miss", "hit", "skip")
        ]
        print(f"\nSemantic cache, online (one-hop, threshold {args.threshold}, instant stub, concurrency 1)")
        print(table(["lookup", "n", "p50 ms", "p99 ms", "p50 / skipped"], rows))
        print(f"paraphrase hit rate through the service: {on['online_paraphrase_hit_rate']:.1%}")
        result["online"] = {"threshold": args.threshold, **on}
    finish("cache", mach, result)


if __name__ == "__main__":
    main()
