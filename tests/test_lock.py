"""constraints.txt is generated from pyproject.toml (scripts/check_lock.py, run by `make lint`): the check
passes on the tree and fails on a pyproject.toml changed since `make lock`, a pin edited by hand, or a pin
outside its range."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent


def _checker() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(ROOT / "scripts" / "check_lock.py")))


def test_the_lock_is_current() -> None:
    assert _checker().problems() == []


def test_the_check_sees_a_changed_pyproject_a_hand_edit_and_a_pin_out_of_range(tmp_path: Path) -> None:
    check = _checker()
    pyproject, lock = tmp_path / "pyproject.toml", tmp_path / "constraints.txt"
    pyproject.write_text(check.PYPROJECT.read_text())
    lock.write_text(check.LOCK.read_text())
    assert check.problems(pyproject, lock) == []

    pyproject.write_text(
        check.PYPROJECT.read_text().replace('"numpy>=2.0",', '"numpy>=2.0",\n  "left-pad>=1",')
    )
    found = check.problems(pyproject, lock)
    assert any("not what `make lock` generates" in p for p in found), found
    assert any("no pin for left-pad" in p for p in found), found

    pyproject.write_text(check.PYPROJECT.read_text())
    pinned = check.pins(lock)["numpy"]
    lock.write_text(check.LOCK.read_text().replace(f"numpy=={pinned}", "numpy==1.26.4"))
    found = check.problems(pyproject, lock)
    assert any("not what `make lock` generates" in p for p in found), found
    assert any("pins numpy==1.26.4, outside" in p for p in found), found
