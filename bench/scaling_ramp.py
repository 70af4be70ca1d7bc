"""Scaling, measured (issue 28): an autoscaling ramp on a two-node local Ray cluster.

A head node and a worker node (`ray start`, 2 CPUs each, loopback, started and stopped here by PID),
`coe up` joined to them with COE_AUTOSCALE=true (one-hop: CoeIngress 1..--max-replicas, each replica
0.75 CPU, one embedder thread), in front of the instant stub expert of tests/deploy/replicas_stack.py.
Clients send `model=auto` chat completions (MT-Bench + Vicuna-bench first turns, cycled) at a concurrency
that steps up and back down (`--steps`, default 1 → 8 → 16 → 32 → 16 → 8 → 1), each step for a bounded
time. Every second the number of running CoeIngress replica processes on each node is sampled. Per step:
requests, failures (any non-200 or transport error: there are no client retries), p50 / p99 latency, and
the replicas seen. The autoscaler's timing is shortened for a run of minutes (upscale delay, downscale
delay and look-back: --up-s, --down-s, --look-back-s). Writes bench/results/scaling_ramp.json.

Usage: python bench/scaling_ramp.py [--steps 1:30 8:30 16:30 32:60 16:30 8:30 1:90] [--max-replicas 4]
           [--up-s 5] [--down-s 45] [--look-back-s 20] [--ingress haproxy|proxy]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, offline_env, pct, table, write  # noqa: E402
from service_overhead import load_prompts, say  # noqa: E402


async def one_step(http: Any, conc: int, seconds: float, prompts: list[str], sample: Any) -> dict:
    """`conc` clients for `seconds`, sampling the replicas every second."""
    import httpx

    lats: list[float] = []
    failures: list[str] = []
    seen: list[tuple[int, int]] = []
    stop_at = time.monotonic() + seconds

    async def worker(i: int) -> None:
        turn = i * 7
        while time.monotonic() < stop_at:
            turn += 1
            text = prompts[turn % len(prompts)]
            body = {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
            t0 = time.perf_counter()
            try:
                r = await http.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    continue
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            lats.append(time.perf_counter() - t0)

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            seen.append(await asyncio.to_thread(sample))
            await asyncio.sleep(1.0)

    t0 = time.monotonic()
    await asyncio.gather(sampler(), *(worker(i) for i in range(conc)))
    took = time.monotonic() - t0
    totals = [h + w for h, w in seen] or [0]
    return {
        "concurrency": conc,
        "seconds": round(took, 1),
        "ok": len(lats),
        "failed": len(failures),
        "failures": failures[:5],
        "req_per_s": len(lats) / max(took, 1e-9),
        "p50_ms": pct(lats, 50),
        "p99_ms": pct(lats, 99),
        "replicas_min": min(totals),
        "replicas_max": max(totals),
        "replicas_end": totals[-1],
        "replicas_timeline": totals,
        "worker_node_max": max((w for _, w in seen), default=0),
        "loadavg": os.getloadavg()[0],
    }


async def ramp(
    base: str, headers: dict[str, str], steps: list[tuple[int, float]], prompts: list[str], sample: Any
) -> list[dict]:
    import httpx

    out: list[dict] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits, headers=headers) as http:
        for conc, seconds in steps:
            row = await one_step(http, conc, seconds, prompts, sample)
            out.append(row)
            say(
                f"concurrency {conc:>2} for {row['seconds']:.0f}s: {row['ok']} ok, {row['failed']} failed, "
                f"replicas {row['replicas_min']}..{row['replicas_max']}, load {row['loadavg']:.1f}"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", nargs="+", default=["1:30", "8:30", "16:30", "32:60", "16:30", "8:30", "1:90"])
    ap.add_argument("--max-replicas", type=int, default=4)
    ap.add_argument("--up-s", type=float, default=5.0)
    ap.add_argument("--down-s", type=float, default=45.0)
    ap.add_argument("--look-back-s", type=float, default=20.0)  # Serve wants it > its 10 s metrics interval
    ap.add_argument("--ingress", choices=["haproxy", "proxy"], default="haproxy")  # COE_SERVE_INGRESS
    args = ap.parse_args()
    offline_env()
    from tests.deploy.replicas_stack import front_door, start_two_nodes

    steps = [(int(c), float(s)) for c, s in (x.split(":") for x in args.steps)]
    mach = machine()
    say(f"load average at start: {mach['loadavg_at_start']}")
    prompts = load_prompts("chat")
    tmp = Path(tempfile.mkdtemp(prefix="coe-bench-ramp-"))
    cluster = start_two_nodes(
        tmp,
        COE_AUTOSCALE="true",
        COE_AUTOSCALE_MAX_REPLICAS=str(args.max_replicas),
        COE_AUTOSCALE_UPSCALE_DELAY_S=str(args.up_s),
        COE_AUTOSCALE_DOWNSCALE_DELAY_S=str(args.down_s),
        COE_AUTOSCALE_LOOK_BACK_S=str(args.look_back_s),
        COE_SERVE_INGRESS=args.ingress,
    )
    try:
        door = front_door(int(cluster.base.rsplit(":", 1)[1]))
        say(f"two nodes up, CoE at {cluster.base} ({door}); replicas (head, worker) {cluster.replicas()}")
        rows = asyncio.run(ramp(cluster.base, cluster.auth(), steps, prompts, cluster.replicas))
    finally:
        cluster.stop()
    print(
        table(
            [
                "concurrency",
                "s",
                "ok",
                "failed",
                "req/s",
                "p50 ms",
                "p99 ms",
                "replicas min..max",
                "on worker",
            ],
            [
                [
                    r["concurrency"],
                    r["seconds"],
                    r["ok"],
                    r["failed"],
                    r["req_per_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    f"{r['replicas_min']}..{r['replicas_max']}",
                    r["worker_node_max"],
                ]
                for r in rows
            ],
        )
    )
    failed = sum(r["failed"] for r in rows)
    print(f"failed requests: {failed} of {failed + sum(r['ok'] for r in rows)}")
    print(
        f"load average: start {mach['loadavg_at_start']}, per step {[round(r['loadavg'], 1) for r in rows]}"
    )
    print(f"front door: {door} (--ingress {args.ingress})")
    path = write("scaling_ramp", {"machine": mach, "args": vars(args), "front_door": door, "steps": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
