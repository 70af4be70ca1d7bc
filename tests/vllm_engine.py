"""What the `vllm` tests share: whether they run, and how a real vLLM engine is started for them.

They run by default, against vLLM's CPU build in `.venv-vllm` (built by `make test`/`make vllm`;
`COE_VLLM_PYTHON` names another interpreter). `COE_TEST_VLLM=0` skips them, for machines where that
build cannot install. With the variable unset and no engine, they fail and say how to build it."""

from __future__ import annotations

import os
import re
import time

import httpx
import pytest

SKIP_VLLM = pytest.mark.skipif(
    os.environ.get("COE_TEST_VLLM") == "0",
    reason="COE_TEST_VLLM=0: vLLM's CPU build is not installed on this machine (scripts/install-vllm.sh)",
)


def require_vllm() -> None:
    """Fail (not skip) when the engine is missing: the vllm tests are part of the default run."""
    from experts.vllm_server import vllm_missing

    missing = vllm_missing()
    if missing:
        pytest.fail(f"{missing}; `make vllm` builds it, COE_TEST_VLLM=0 skips these tests")


_METRIC = re.compile(r'^vllm:request_success_total\{[^}]*finished_reason="(\w+)"[^}]*\}\s+([0-9.e+]+)', re.M)


def finished(server_url: str) -> dict[str, float]:
    """vLLM's finished-request counters by reason (stop, length, abort, ...) from its /metrics."""
    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for reason, value in _METRIC.findall(text):
        out[reason] = out.get(reason, 0.0) + float(value)
    return out


def wait_for(check, timeout: float = 60.0, step: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns a truthy value (returned) or `timeout` passes (returns the last)."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = check()
    return value
