"""The added latency of the two new front doors, `/v1/responses` (OpenAI Responses API) and `/v1/messages`
(Anthropic Messages API), against `/v1/chat/completions`, in the same run, requests interleaved round by
round (chat, responses, responses with store=false, messages), concurrency 1. Goal (issue 26): within 1 ms.

1. In process: the ingress app over httpx.ASGITransport with the router and gateway doubles of
   tests/deploy/doubles.py (no network, no model, the registry double's in-memory store), so the
   difference is the front door's own work: translation, the Response / Message built back, storing.
2. The service: `deploy.ops.local.start` (Ray Serve, one-hop topology, the real router artifact and the
   real registry on SQLite: stored responses are real database writes) in front of an instant-answer stub
   expert (bench/gateway_overhead.py), over HTTP on loopback.

    .venv/bin/python bench/front_doors.py [--rounds 2000] [--service-rounds 300] [--no-service]

Prints p50 / p90 per path, the added p50 against chat in ms and as a ratio, the load average at start
and end; writes bench/results/front_doors.json."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import finish, machine, offline_env, pct, table  # noqa: E402

PROMPT = "What is 2+2?"
#: the same question through each door (what the official SDKs send for it)
BODIES: dict[str, dict[str, Any]] = {
    "chat": {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]},
    "responses": {"model": "auto", "input": PROMPT},
    "responses store=false": {"model": "auto", "input": PROMPT, "store": False},
    "messages": {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]},
}
PATHS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "responses store=false": "/v1/responses",
    "messages": "/v1/messages",
}


def say(msg: str) -> None:
    print(f"[front_doors] {msg}", flush=True)


async def interleaved(
    post: Callable[[str, dict[str, Any]], Awaitable[Any]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Per-request latencies (s) by door; each round sends one request through every door, in turn."""
    for _ in range(warmup):
        for name, body in BODIES.items():
            await post(PATHS[name], json=body)
    out: dict[str, list[float]] = {name: [] for name in BODIES}
    for _ in range(rounds):
        for name, body in BODIES.items():
            t = time.perf_counter()
            r = await post(PATHS[name], json=body)
            out[name].append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
    return out


def summary(lat: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base = pct(lat["chat"], 50)
    return {
        name: {
            "n": len(xs),
            "p50_ms": round(pct(xs, 50), 4),
            "p90_ms": round(pct(xs, 90), 4),
            "added_p50_ms": round(pct(xs, 50) - base, 4),
            "p50_ratio": round(pct(xs, 50) / base, 3),
        }
        for name, xs in lat.items()
    }


def show(title: str, s: dict[str, dict[str, float]]) -> None:
    rows = [
        [n, v["n"], v["p50_ms"], v["p90_ms"], v["added_p50_ms"], f"{v['p50_ratio']:.3f}x"]
        for n, v in s.items()
    ]
    print(f"\n{title}")
    print(table(["door", "n", "p50 ms", "p90 ms", "added p50 ms vs chat", "p50 / chat"], rows))


async def in_process(rounds: int) -> dict[str, dict[str, float]]:
    import httpx

    from deploy.pipeline.ingress import Ingress
    from deploy.settings import Settings
    from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

    settings = Settings(database_url="sqlite://", data_dir=tempfile.mkdtemp(), access_log=False)
    ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=FakeRegistry())
    transport = httpx.ASGITransport(app=ingress.build_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        return summary(await interleaved(c.post, rounds, warmup=200))


async def service(rounds: int) -> dict[str, dict[str, float]]:
    import httpx
    from service_overhead import stub_service

    with stub_service("coe-bench-doors-", say) as stack:
        async with httpx.AsyncClient(base_url=stack.base, timeout=60) as c:
            return summary(await interleaved(c.post, rounds, warmup=50))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000, help="in-process rounds (one request per door each)")
    ap.add_argument("--service-rounds", type=int, default=300)
    ap.add_argument("--no-service", action="store_true", help="only the in-process part")
    args = ap.parse_args()
    offline_env()
    mach = machine()
    say(f"load average at start: {mach['loadavg_at_start']}")
    result: dict[str, Any] = {}
    result["in_process"] = asyncio.run(in_process(args.rounds))
    show("In process (ASGI, router and gateway doubles), concurrency 1", result["in_process"])
    if not args.no_service:
        result["service"] = asyncio.run(service(args.service_rounds))
        show(
            "The service (Ray Serve one-hop, real router, SQLite registry, instant stub expert), HTTP",
            result["service"],
        )
    finish("front_doors", mach, result)


if __name__ == "__main__":
    main()
