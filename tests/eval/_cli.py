"""`coe …` run as a user runs it: a fresh process, its exit code and its output (the eval CLI tests)."""

from __future__ import annotations

import subprocess
import sys


def coe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", *args], capture_output=True, text=True, timeout=timeout
    )
