"""Soak: `coe up` (the embedded default: SmolLM2 personas, onehop) under a steady moderate load for minutes.

Reports the RSS of every process of the run (the `coe up` driver, the local expert server, Ray's GCS,
raylet, agents, the Serve controller, proxy and replica workers) at the start and at the end, latency
p50/p99 and errors per time window, the load average, and how the run ended (SIGTERM: exit code and the
drain line). Not in CI: `.venv/bin/python bench/soak.py --minutes 3 --concurrency 2`.
Writes bench/results/soak.json."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import pct, table, write  # noqa: E402
from deploy.settings import DEFAULT_ROUTER_ARTIFACT, REPO_ROOT  # noqa: E402
from experts.net import free_port  # noqa: E402
from tests.deploy.conftest import coe_up_env  # noqa: E402

QUESTIONS = [
    "What is 12 times 7?",
    "Write a Python function that reverses a string.",
    "What are common symptoms of the flu?",
    "Name the capital of France.",
    "Explain what a hash table is in one sentence.",
    "What is the derivative of x^3?",
]


def label(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "gone"
    for needle, name in (
        ("deploy.ops.cli up", "coe up (driver)"),
        ("experts.local_server", "local expert server"),
        ("gcs_server", "ray gcs_server"),
        ("raylet", "ray raylet"),
        ("dashboard/agent.py", "ray dashboard agent"),
        ("runtime_env/agent", "ray runtime env agent"),
        ("log_monitor", "ray log monitor"),
        ("monitor.py", "ray monitor"),
        ("dashboard.py", "ray dashboard"),
    ):
        if needle in cmd:
            return name
    try:
        title = p.name()
    except psutil.Error:
        title = "?"
    if cmd.startswith("ray::"):  # the title carries the running method: ray::ProxyActor.receive_asgi_messages
        return "ray worker " + cmd.split()[0].split(".")[0]
    return f"ray worker {title}"


def rss_by_process(root: int) -> dict[str, float]:
    """RSS in MiB of each process of the run, by label (workers summed under their actor name)."""
    out: dict[str, float] = {}
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return out
    for p in procs:
        try:
            mib = p.memory_info().rss / 2**20
        except psutil.Error:
            continue
        name = label(p)
        out[name] = round(out.get(name, 0.0) + mib, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=2, help="clients, each sending back to back")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--window-s", type=float, default=30.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="coe-soak-"))
    port = free_port()
    # the tests' `coe up` environment, with this run's data dir (COE_DATA_DIR, default .coe)
    data_dir = str(Path(os.environ.get("COE_DATA_DIR", REPO_ROOT / ".coe")))
    env = coe_up_env(tmp, port, DEFAULT_ROUTER_ARTIFACT, COE_DATA_DIR=data_dir)
    log = tmp / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.ops.cli", "up"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    t_start = time.monotonic()
    while "Press Ctrl-C to stop." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() - t_start > 600:
            sys.exit(f"coe up did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    startup_s = time.monotonic() - t_start
    print(f"coe up ready in {startup_s:.0f}s; soaking {args.minutes:g} min at concurrency {args.concurrency}")

    samples: list[tuple[float, float, bool, str]] = []  # (t since start, latency s, ok, error)
    lock = threading.Lock()
    stop = threading.Event()
    t0 = time.monotonic()

    def client(i: int) -> None:
        n = i
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                body = {
                    "model": "auto",
                    "messages": [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}],
                    "max_tokens": args.max_tokens,
                    "temperature": 0.7,  # not cacheable, so every request reaches an expert
                    "stream": n % 3 == 0,
                }
                n += args.concurrency
                s = time.monotonic()
                err = ""
                try:
                    r = c.post(f"{base}/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and ('"error"' not in r.text if body["stream"] else True)
                    if not ok:
                        err = f"HTTP {r.status_code}: {r.text[:120]}"
                except httpx.HTTPError as exc:
                    ok, err = False, type(exc).__name__
                with lock:
                    samples.append((s - t0, time.monotonic() - s, ok, err))

    rss_start = rss_by_process(proc.pid)
    load_start = os.getloadavg()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    time.sleep(min(args.window_s, args.minutes * 60))
    rss_warm = rss_by_process(proc.pid)  # after the first window: models loaded, caches warm
    time.sleep(max(0.0, args.minutes * 60 - args.window_s))
    rss_end = rss_by_process(proc.pid)
    load_end = os.getloadavg()
    stop.set()
    for t in threads:
        t.join(130)

    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait(10)
    drain = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("drained")]

    windows: list[dict[str, Any]] = []
    w = 0.0
    while w < args.minutes * 60:
        chunk = [x for x in samples if w <= x[0] < w + args.window_s]
        lat = [x[1] for x in chunk if x[2]]
        windows.append(
            {
                "window_s": f"{w:.0f}-{w + args.window_s:.0f}",
                "requests": len(chunk),
                "errors": sum(1 for x in chunk if not x[2]),
                "p50_ms": round(pct(lat, 50), 1),
                "p99_ms": round(pct(lat, 99), 1),
            }
        )
        w += args.window_s
    errors = [x[3] for x in samples if not x[2]]
    names = sorted(set(rss_start) | set(rss_warm) | set(rss_end))
    print(table(["window", "requests", "errors", "p50 ms", "p99 ms"], [list(x.values()) for x in windows]))
    print(
        table(
            ["process", "RSS start MiB", f"after {args.window_s:g}s", "RSS end MiB", "end - warm"],
            [
                [
                    n,
                    rss_start.get(n, 0.0),
                    rss_warm.get(n, 0.0),
                    rss_end.get(n, 0.0),
                    round(rss_end.get(n, 0) - rss_warm.get(n, 0), 1),
                ]
                for n in names
            ],
        )
    )
    lat_all = [x[1] for x in samples if x[2]]
    summary = {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "startup_s": round(startup_s, 1),
        "requests": len(samples),
        "errors": len(errors),
        "error_examples": errors[:5],
        "p50_ms": round(pct(lat_all, 50), 1),
        "p99_ms": round(pct(lat_all, 99), 1),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "exit_code": code,
        "drain_line": drain[0] if drain else None,
        "windows": windows,
        "rss_start_mib": rss_start,
        "rss_warm_mib": rss_warm,
        "rss_end_mib": rss_end,
    }
    print(
        f"{len(samples)} requests, {len(errors)} errors, p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms; load average {load_start[0]:.2f} -> {load_end[0]:.2f}; "
        f"SIGTERM: exit {code}; {summary['drain_line']}"
    )
    print(f"wrote {write('soak', summary)}")


if __name__ == "__main__":
    main()
