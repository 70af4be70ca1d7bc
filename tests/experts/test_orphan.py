"""The local model server never outlives the process that started it (a `coe up` killed hard)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

PARENT = """
import time
from experts.local_server import start_local_server
h = start_local_server(0, timeout=180)
print(h.process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_server_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
    for _ in range(60):  # the watchdog polls every second
        try:
            os.kill(server_pid, 0)
            with open(f"/proc/{server_pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":  # exited, not yet reaped by init
                    return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.5)
    os.kill(server_pid, 9)
    pytest.fail("the local model server outlived its parent")
