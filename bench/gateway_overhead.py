"""Gateway overhead: an instant-answer OpenAI-compatible server called directly (httpx) vs through
experts.pool.ExpertPool.complete() with a RouteDecision naming that expert -- the in-process gateway cost
(client, concurrency lease, breaker, load window, failover bookkeeping, response parsing).

The stub server (FastAPI + uvicorn, one worker, subprocess on 127.0.0.1) returns a fixed completion at once.
Usage: python bench/gateway_overhead.py [--requests 1000] [--concurrency 1 8]
Writes bench/results/gateway_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import drive, machine, pct, table, write  # noqa: E402

from experts.net import free_port  # noqa: E402  (service_overhead.py imports it from here)

STUB = r"""
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
BODY = {"id": "cmpl-bench", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}
@app.post("/v1/chat/completions")
async def chat(body: dict):
    return BODY
@app.get("/v1/models")
async def models():
    return {"object": "list", "data": [{"id": "stub", "object": "model"}]}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def start_stub() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STUB, str(port)], env={**os.environ})
    import httpx

    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("stub server did not start")


async def run(args: argparse.Namespace, base: str) -> dict:
    import httpx

    from experts.pool import ExpertPool
    from experts.types import ChatRequest
    from router.types import ExpertChoice, ExpertInfo, RegistrySnapshot, RouteDecision

    info = ExpertInfo(name="stub", base_url=base, model="stub", max_concurrency=64, timeout_s=30)
    snap = RegistrySnapshot(revision=1, experts={"stub": info}, category_experts={"other": ("stub",)})
    decision = RouteDecision(categories=(("other", 1.0),), experts=(ExpertChoice("stub", 1.0),))
    messages = ({"role": "user", "content": "What is 6*7?"},)
    req = ChatRequest(messages=messages, params={"max_tokens": 8})
    body = {"model": "stub", "messages": list(messages), "max_tokens": 8}

    http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64), timeout=30
    )
    pool = ExpertPool(snap, health_interval_s=0)  # no background health checks during the run

    async def direct() -> None:
        r = await http.post(f"{base}/chat/completions", json=body)
        r.raise_for_status()
        r.json()["choices"][0]["message"]["content"]

    async def via_pool() -> None:
        res = await pool.complete(decision, req)
        assert res.content == "42"

    paths = {"direct": direct, "pool": via_pool}
    for fn in paths.values():  # warm-up: connections, imports
        await drive(fn, 30, 8)

    results: dict = {}
    for conc in args.concurrency:
        for _ in range(args.rounds):  # alternate paths each round: both see the same background load
            for name, fn in paths.items():
                lats, _, wall = await drive(fn, args.requests, conc)
                cell = results.setdefault(str(conc), {}).setdefault(name, {"lat": [], "wall": 0.0, "n": 0})
                cell["lat"] += lats
                cell["wall"] += wall
                cell["n"] += len(lats)
    await pool.aclose()
    await http.aclose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000, help="requests per path per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()

    proc, base = start_stub()
    try:
        raw = asyncio.run(run(args, base))
    finally:
        proc.terminate()
        proc.wait(10)

    rows = []
    out_cells: dict = {}
    for conc, paths in raw.items():
        cells = {}
        for name, c in paths.items():
            cells[name] = {
                "n": c["n"],
                "p50_ms": pct(c["lat"], 50),
                "p99_ms": pct(c["lat"], 99),
                "mean_ms": sum(c["lat"]) / len(c["lat"]) * 1000,
                "rps": c["n"] / c["wall"],
            }
        d, p = cells["direct"], cells["pool"]
        ratio = {
            "p50": p["p50_ms"] / d["p50_ms"],
            "p99": p["p99_ms"] / d["p99_ms"],
            "rps": p["rps"] / d["rps"],
            "added_p50_ms": p["p50_ms"] - d["p50_ms"],
        }
        out_cells[conc] = {**cells, "ratio_pool_over_direct": ratio}
        for name in ("direct", "pool"):
            c = cells[name]
            rows.append([conc, name, c["n"], c["p50_ms"], c["p99_ms"], c["rps"]])
        rows.append([conc, "pool/direct", "", ratio["p50"], ratio["p99"], ratio["rps"]])

    print("\nGateway overhead -- instant-answer stub on loopback, direct httpx vs ExpertPool.complete()")
    print(table(["concurrency", "path", "n", "p50 ms", "p99 ms", "req/s"], rows))
    for conc, c in out_cells.items():
        print(f"concurrency {conc}: pool adds {c['ratio_pool_over_direct']['added_p50_ms']:.3f} ms at p50")
    out = {
        "benchmark": "gateway_overhead",
        "machine": machine(),
        "setup": {
            "stub": "FastAPI+uvicorn, 1 worker, separate process, fixed completion",
            "client": "httpx.AsyncClient in the benchmark process (same for both paths)",
            "requests_per_path_per_round": args.requests,
            "rounds": args.rounds,
        },
        "results": out_cells,
    }
    print(f"\nwrote {write('gateway_overhead', out)}")


if __name__ == "__main__":
    main()
