"""The layering docs/CONTRACTS.md promises, from the code's own imports (scripts/check_structure.py, also
run by `make lint`): no upward import, no import cycle, no module over 600 lines and no folder over 16
modules in the five packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_structure", ROOT / "scripts" / "check_structure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_structure"] = module
    spec.loader.exec_module(module)
    return module


def test_the_packages_keep_their_layers_and_size():
    assert _checker().problems() == []


def test_the_checker_sees_an_upward_import_a_cycle_a_long_module_and_a_crowded_folder(tmp_path: Path):
    check = _checker()
    for package in check.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "router" / "a.py").write_text("def f():\n    from deploy import b  # lazy, still counted\n")
    (tmp_path / "deploy" / "b.py").write_text("from deploy import c\n")
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from deploy import b\n"
    (tmp_path / "deploy" / "c.py").write_text(typing_only)
    (tmp_path / "experts" / "d.py").write_text("import registry\n" + "x = 1\n" * 700)
    (tmp_path / "eval" / "many").mkdir()
    for i in range(17):
        (tmp_path / "eval" / "many" / f"m{i}.py").write_text("")
    found = check.problems(tmp_path)
    assert any(p.startswith("upward import: router.a:2 imports deploy.b") for p in found), found
    assert "import cycle: deploy.b <-> deploy.c" in found
    assert any(p.startswith("upward import: experts.d:1 imports registry") for p in found), found
    assert any(p.startswith("long module: experts/d.py: 701 lines") for p in found), found
    assert "crowded folder: eval/many/: 17 modules (limit 16)" in found, found
