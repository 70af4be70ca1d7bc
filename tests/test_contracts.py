"""docs/CONTRACTS.md's layer table names the modules of the five packages as they are: every `x.py` it
names exists in its package, and every module of a package is named in that package's row."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("router", "experts", "registry", "eval", "deploy")


def _rows() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "docs" / "CONTRACTS.md").read_text().splitlines():
        m = re.match(r"^\| \d \| `(\w+)/` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _modules(package: str) -> list[Path]:
    return [
        p.relative_to(ROOT / package)
        for p in sorted((ROOT / package).rglob("*.py"))
        if p.name != "__init__.py" and "versions" not in p.parts and "__pycache__" not in p.parts
    ]


def test_every_package_has_a_row() -> None:
    assert set(_rows()) == set(PACKAGES)


def test_every_named_module_exists() -> None:
    for package, row in _rows().items():
        names = {p.name for p in _modules(package)}
        named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.py)", row))
        assert named, package
        assert named <= names, f"{package}/ row names modules that are not there: {sorted(named - names)}"


def test_every_module_is_named() -> None:
    for package, row in _rows().items():
        named = set(re.findall(r"(\w+)\.py", row))
        missing = [str(p) for p in _modules(package) if p.stem not in named and p.parts[0] != "migrations"]
        assert not missing, f"docs/CONTRACTS.md's {package}/ row does not name {missing}"
