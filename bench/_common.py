"""Shared helpers for the benchmarks: percentiles, a table printer, the JSON writer, machine facts."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

#: what every benchmark runs with: offline models, Ray's token auth off (Ray 2.60 default), no telemetry
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def offline_env() -> None:
    """Set OFFLINE_ENV where the caller has not set the variable already."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def pct(samples_s: list[float], q: float) -> float:
    """Percentile of a list of seconds, in milliseconds."""
    return float(np.percentile(np.asarray(samples_s) * 1000.0, q)) if samples_s else float("nan")


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *map(line, cells)])


def write(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def finish(name: str, mach: dict[str, Any], result: dict[str, Any]) -> Path:
    """Print the load average at the end beside the one at the start, and write `name`.json with the
    machine facts (both load averages) and `result`."""
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average: start {mach['loadavg_at_start']}, end {load_end}")
    path = write(name, {"benchmark": name, "machine": {**mach, "loadavg_at_end": load_end}, **result})
    print(f"wrote {path}")
    return path


async def drive(
    call: Callable[[], Awaitable[Any]], n: int, conc: int
) -> tuple[list[float], list[Any], float]:
    """n calls from `conc` concurrent workers: per-call latencies (s), what each call answered when not
    None, and the wall time (s)."""
    lats: list[float] = []
    infos: list[Any] = []
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            a = time.perf_counter()
            t = await call()
            lats.append(time.perf_counter() - a)
            if t:
                infos.append(t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return lats, infos, time.perf_counter() - t0
