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


def test_a_fresh_sqlite_file_opened_while_another_connection_writes(tmp_path: Path) -> None:
    """Switching a file to WAL needs it to itself, and SQLite refuses the switch at once, busy timeout or
    not, while another connection holds a lock: replicas opening a fresh file together. The registry
    waits for the lock instead of failing (registry/db.py::_wal)."""
    import sqlite3
    import threading

    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a write lock on a file still in rollback-journal mode
    other.execute("CREATE TABLE elsewhere (i INTEGER)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        with Registry(f"sqlite:///{path}") as reg:
            reg.remember_affinity(["session:a"], "math", 60)
            assert reg.affinity_expert(["session:a"]) == "math"
    finally:
        release.join()
        other.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
