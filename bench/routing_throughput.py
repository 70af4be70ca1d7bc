"""Routing throughput (issue 28): does `model=auto` keep up with requests by name when many arrive at once?

One CoE ingress replica (the real stack: deploy.ops.local.start, local Ray on 127.0.0.1, Ray Serve, the
one-hop app) in front of the instant-answer stub of bench/gateway_overhead.py. In every round, the same
prompts (MT-Bench + Vicuna-bench first turns from ../shared/data, cycled) go through each path at
`--concurrency` (default 16), one path after the other:

  direct     POST the stub itself                              (the baseline)
  coe-name   POST CoE with model=stub: no routing
  coe-auto   POST CoE with model=auto: embed + classify (batched across the replica's concurrent requests)
  litellm    POST the LiteLLM proxy for the same stub           (when .venv-peers/litellm exists)

then the same paths at concurrency 1 (added latency over `direct`). It reports:
- throughput per path and the ratio coe-auto / coe-name (target ≥ 0.6 at concurrency 16);
- the embedding batch sizes coe-auto requests got (each response's `coe.timings_ms.batch_size`);
- the encoder floor on the same texts, in this process, with the service's router and thread count:
  `router.probabilities` (embed + classify) in batches of the concurrency, and one text at a time;
- at concurrency 1, the added p50 of coe-name and of litellm over direct (target: coe-name ≤ litellm).
The load average is printed at the start and after each round: absolute figures on a shared machine are
noise; the ratios within one run are the result. Writes bench/results/routing_throughput.json.

Usage: python bench/routing_throughput.py [--requests 240] [--rounds 3] [--concurrency 16]
           [--c1-requests 80] [--no-litellm] [--ingress haproxy|proxy] [--set batch_max_size=16 ...]
--ingress picks the service's front door (COE_SERVE_INGRESS, deploy/serve/env.py; default: the setting's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import drive, machine, offline_env, pct, table, write  # noqa: E402
from gateway_overhead import start_stub  # noqa: E402
from service_overhead import (  # noqa: E402
    STUB_MODEL,
    litellm_version,
    load_prompts,
    make_call,
    say,
    seed_registry,
    start_litellm,
    stop,
)


def encoder_floor(settings: Any, texts: list[str], batch: int, seconds: float = 8.0) -> dict[str, float]:
    """Texts per second of the service's own router (embed + classify) on `texts`, in batches of
    `batch` and one at a time, in this process with the service's thread count."""
    from deploy.pipeline.router_service import load_router

    router = load_router(settings.router_artifact, settings)
    router.probabilities(texts[:batch])  # warm-up
    out: dict[str, float] = {}
    for size in (batch, 1):
        done, i, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            chunk = [texts[(i + k) % len(texts)] for k in range(size)]
            router.probabilities(chunk)
            done += size
            i += size
        out[f"batch{size}_texts_per_s"] = done / (time.perf_counter() - t0)
    return out


async def run(args: argparse.Namespace, bases: dict[str, str], prompts: list[str]) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=128)
    body = {"model": STUB_MODEL, "messages": [], "max_tokens": 8}
    cells: dict[str, dict[str, Any]] = {}
    loads: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        calls = {"direct": make_call(http, f"{bases['direct']}/chat/completions", body, "42", prompts)}
        calls["coe-name"] = make_call(http, f"{bases['coe']}/v1/chat/completions", body, "42", prompts)
        calls["coe-auto"] = make_call(
            http, f"{bases['coe']}/v1/chat/completions", {**body, "model": "auto"}, "42", prompts
        )
        if "litellm" in bases:
            calls["litellm"] = make_call(http, f"{bases['litellm']}/v1/chat/completions", body, "42", prompts)
        for fn in calls.values():  # warm-up: connections, the embedder, the batcher
            await drive(fn, 48, args.concurrency)
        for r in range(args.rounds):
            for conc, n in ((args.concurrency, args.requests), (1, args.c1_requests)):
                for name, fn in calls.items():
                    lats, infos, wall = await drive(fn, n, conc)
                    cell = cells.setdefault(f"{name}@{conc}", {"lat": [], "wall": 0.0, "n": 0, "batch": []})
                    cell["lat"] += lats
                    cell["wall"] += wall
                    cell["n"] += len(lats)
                    cell["batch"] += [i["batch_size"] for i in infos if "batch_size" in i]
            loads.append(os.getloadavg()[0])
            say(f"round {r + 1}/{args.rounds} done (load average {loads[-1]:.2f})")
    return {"cells": cells, "loadavg_after_rounds": loads}


def summarise(raw: dict[str, Any], conc: int) -> dict[str, Any]:
    cells = raw["cells"]
    out: dict[str, Any] = {}
    for key, c in cells.items():
        row = {
            "n": c["n"],
            "req_per_s": c["n"] / c["wall"] if c["wall"] else float("nan"),
            "p50_ms": pct(c["lat"], 50),
            "p99_ms": pct(c["lat"], 99),
        }
        if c["batch"]:
            b = sorted(c["batch"])
            row["batch_mean"] = statistics.fmean(b)
            row["batch_p50"] = b[len(b) // 2]
            row["batch_max"] = b[-1]
            row["batch_share_gt1"] = sum(1 for x in b if x > 1) / len(b)
        out[key] = row
    ratio = out[f"coe-auto@{conc}"]["req_per_s"] / out[f"coe-name@{conc}"]["req_per_s"]
    direct = out["direct@1"]["p50_ms"]
    added = {k.split("@")[0]: v["p50_ms"] - direct for k, v in out.items() if k.endswith("@1")}
    return {"paths": out, "auto_over_name": ratio, "added_p50_ms_c1": added}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=240, help="requests per path per round at --concurrency")
    ap.add_argument(
        "--c1-requests", type=int, default=80, help="requests per path per round at concurrency 1"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument(
        "--ingress", choices=("haproxy", "proxy"), help="COE_SERVE_INGRESS (default: the setting's)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Settings override")
    args = ap.parse_args()
    offline_env()
    from deploy.ops.local import start
    from deploy.serve.env import INGRESS_SWITCHES, SERVE_ENV
    from deploy.settings import Settings

    mach = machine()
    say(f"load average at start: {mach['loadavg_at_start']}")
    prompts = load_prompts("chat")
    tmp = Path(tempfile.mkdtemp(prefix="coe-bench-throughput-"))
    stub_proc = lite_proc = stack = None
    try:
        stub_proc, stub_base = start_stub()
        bases = {"direct": stub_base}
        lite_ver = None if args.no_litellm else litellm_version()
        if lite_ver is not None:
            lite_proc, bases["litellm"], _ = start_litellm({STUB_MODEL: stub_base}, tmp)
            say(f"LiteLLM {lite_ver} at {bases['litellm']}")
        url = f"sqlite:///{tmp / 'coe.db'}"
        seed_registry(url, stub_base, None)
        overrides: dict[str, Any] = dict(kv.split("=", 1) for kv in args.set)
        if args.ingress:
            overrides["serve_ingress"] = args.ingress
        settings = Settings(
            database_url=url,
            data_dir=tmp,
            local_experts=False,
            port=0,
            health_interval_s=0,
            registry_poll_s=1.0,
            decision_log=True,
            **overrides,
        )
        stack = start(settings, say, ready_timeout_s=300)
        bases["coe"] = stack.base
        serve_env = {k: os.environ.get(k) for k in (*SERVE_ENV, *INGRESS_SWITCHES)}  # as Ray got them
        say(f"Ray Serve switches: {serve_env}")
        say(f"CoE at {stack.base}; driving {args.rounds} rounds")
        raw = asyncio.run(run(args, bases, prompts))
        say("encoder floor (this process, the service's router)")
        floor = encoder_floor(settings, prompts, args.concurrency)
    finally:
        if stack is not None:
            stack.close()
        stop(lite_proc)
        stop(stub_proc)
    summary = summarise(raw, args.concurrency)
    rows = [
        [
            k,
            v["n"],
            v["req_per_s"],
            v["p50_ms"],
            v["p99_ms"],
            v.get("batch_mean", "–"),
            v.get("batch_max", "–"),
        ]
        for k, v in summary["paths"].items()
    ]
    print(table(["path@concurrency", "n", "req/s", "p50 ms", "p99 ms", "batch mean", "batch max"], rows))
    print(
        f"coe-auto / coe-name throughput at concurrency {args.concurrency}: {summary['auto_over_name']:.3f}"
    )
    print(f"added p50 over direct at concurrency 1 (ms): {summary['added_p50_ms_c1']}")
    print(f"encoder floor (router.probabilities, texts/s): {floor}")
    print(f"Ray Serve switches: {serve_env}")
    print(f"load average: start {mach['loadavg_at_start']}, after rounds {raw['loadavg_after_rounds']}")
    path = write(
        "routing_throughput",
        {
            "machine": mach,
            "args": vars(args),
            "summary": summary,
            "encoder_floor": floor,
            "serve_env": serve_env,
            "loadavg_after_rounds": raw["loadavg_after_rounds"],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
