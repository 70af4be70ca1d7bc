"""Two processes editing the registry at once never lose an update, and the revision counts every change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from registry import Registry
from registry import repository as repo

REPO_ROOT = Path(__file__).resolve().parents[2]
CHANGES = 30


def test_two_writers_lose_nothing(db_url: str) -> None:
    with Registry(db_url) as reg:
        with reg.session() as s:
            repo.add_expert(s, name="shared", base_url="http://127.0.0.1:9/v1", model="m", max_concurrency=1)
        start = reg.revision()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.registry._writer", db_url, tag, str(CHANGES)],
                cwd=REPO_ROOT,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tag in ("p1", "p2")
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        snap = reg.snapshot()
        assert reg.revision() == start + 2 * CHANGES
        assert snap.experts["shared"].max_concurrency == 1 + 2 * (CHANGES // 2)
        assert len(snap.experts) == 1 + 2 * (CHANGES // 2)
