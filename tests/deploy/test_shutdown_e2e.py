"""SIGTERM to `coe up` under load: every request accepted before the signal completes (plain and
streamed), readiness and new requests get 503 while draining, `coe up` exits 0 with its drain line, and
nothing of the run is left (no Ray process, no expert server)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from experts.net import free_port
from tests.deploy.conftest import coe_up_env, launch_coe_up, router_artifact, wait_until_up

pytestmark = [pytest.mark.serve, pytest.mark.slow, pytest.mark.faults]

STREAMS, PLAIN = 4, 4
Q = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def _in_flight(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("coe_requests_in_flight"):
            return float(line.split()[-1]) - 1  # less this scrape
    return 0.0


def test_sigterm_under_load_drains_and_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    env = coe_up_env(tmp_path, port, router_artifact(tmp_path), COE_SHUTDOWN_GRACE_S="120")
    log = tmp_path / "up.log"
    proc = launch_coe_up(env, log)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    first_chunk = threading.Barrier(STREAMS + 1, timeout=300)

    def streamed(i: int) -> None:
        body = {"model": "auto", "messages": Q, "max_tokens": 48, "stream": True}
        try:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
                lines = r.iter_lines()
                got = [next(lines)]
                first_chunk.wait()
                got += [line for line in lines if line]
                results[f"s{i}"] = (r.status_code, got)
        except Exception as exc:
            results[f"s{i}"] = (None, repr(exc))
            first_chunk.abort()

    def plain(i: int) -> None:
        body = {"model": "auto", "messages": Q, "max_tokens": 48}
        try:
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
            results[f"p{i}"] = (r.status_code, r.json())
        except Exception as exc:
            results[f"p{i}"] = (None, repr(exc))

    try:
        wait_until_up(proc, log)
        threads = [threading.Thread(target=streamed, args=(i,)) for i in range(STREAMS)]
        threads += [threading.Thread(target=plain, args=(i,)) for i in range(PLAIN)]
        for t in threads:
            t.start()
        first_chunk.wait()  # every stream has its first chunk: accepted
        deadline = time.monotonic() + 60
        while _in_flight(base) < STREAMS + PLAIN and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _in_flight(base) >= STREAMS + PLAIN, "the plain requests never arrived"
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        assert any("raylet" in " ".join(p.cmdline()) for p in family[1:])

        proc.send_signal(signal.SIGTERM)
        saw_draining = None
        for _ in range(200):
            try:
                r = httpx.get(f"{base}/readyz", timeout=5)
            except httpx.HTTPError:
                break
            if r.status_code == 503 and r.json().get("draining"):
                late = httpx.post(f"{base}/v1/chat/completions", json={"model": "auto", "messages": Q})
                saw_draining = (late.status_code, late.headers.get("retry-after"), late.json())
                break
            time.sleep(0.05)
        for t in threads:
            t.join(300)
        assert proc.wait(180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    out = log.read_text()
    assert "Traceback" not in out
    assert f"{STREAMS + PLAIN} request(s) in flight at the signal, all finished" in out, out[-2000:]
    for name, (status, body) in sorted(results.items()):
        assert status == 200, (name, body)
        if name.startswith("s"):
            assert body[-1] == "data: [DONE]" and not any('"error"' in line for line in body), (name, body)
        else:
            assert body["choices"][0]["message"]["content"], (name, body)
    assert saw_draining is not None, "readiness never said draining"
    assert saw_draining[0] == 503 and saw_draining[1] and saw_draining[2]["error"]["code"] == "shutting_down"
    time.sleep(1.0)
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, " ".join(p.cmdline())[:120]) for p in left]
