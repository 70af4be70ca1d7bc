"""What the per-request hooks of deploy/pipeline/observe.py cost: chat completions through the ingress
in process
(FakeRouter, FakeGateway, httpx.ASGITransport: no network, no model), so only the ingress's own work counts.

    PYTHONPATH=. .venv/bin/python bench/observe_overhead.py [SETTING=VALUE ...] 2>/dev/null

e.g. `access_log=false decision_log=false` (tracing is off unless COE_OTEL_ENDPOINT is set). Run it with
PYTHONPATH pointing at another checkout to compare. Prints the median of 5 runs of 500 requests."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time

import httpx

from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

MSG = [{"role": "user", "content": "What is 2+2?"}]


async def main() -> None:
    extra = dict(a.split("=", 1) for a in sys.argv[1:])
    settings = Settings(database_url="sqlite://", data_dir=tempfile.mkdtemp(), **extra)
    ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=FakeRegistry())
    transport = httpx.ASGITransport(app=ingress.build_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        for _ in range(200):
            await c.post("/v1/chat/completions", json={"messages": MSG})
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(500):
                await c.post("/v1/chat/completions", json={"messages": MSG})
            runs.append((time.perf_counter() - t) / 500 * 1e6)
    median = statistics.median(runs)
    print(f"{extra or 'defaults'}: median {median:.0f} µs/request, runs {[round(r) for r in runs]}")


if __name__ == "__main__":
    asyncio.run(main())
