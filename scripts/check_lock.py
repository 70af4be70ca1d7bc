"""constraints.txt is generated from pyproject.toml, never written by hand.

    python scripts/check_lock.py --write   # `make lock`: re-resolve with uv, keep current pins where they fit
    python scripts/check_lock.py           # `make lint`: is constraints.txt current? (offline)

The lock is `uv pip compile` over pyproject.toml's dependencies and every extra, for CPython 3.11 on linux
x86_64, with torch fixed to the CPU wheel the Makefile installs first (found in TORCH_WHEELS, /opt/wheels by
default) and left out of the file: its own dependencies (sympy, networkx, ...) are pinned, CUDA's are not
there at all. The file's third line records a digest of what it was generated from (pyproject's
dependency tables and this command) and of its own pins; the check recomputes it and checks that every
requirement of pyproject.toml has a pin in the file that satisfies it. Exit 1, one line per problem."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
TORCH = "torch==2.13.0+cpu"
UV_ARGS = [
    "pip",
    "compile",
    "pyproject.toml",
    "--all-extras",
    "--python-version",
    "3.11",
    "--python-platform",
    "x86_64-manylinux_2_28",
    "--no-emit-package",
    "torch",
    "--custom-compile-command",
    "make lock",
    "--native-tls",
]
STAMP = "# inputs-sha256: "


def inputs(pyproject: Path = PYPROJECT) -> dict[str, object]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "uv": UV_ARGS,
        "torch": TORCH,
    }


def digest(lock_text: str, pyproject: Path = PYPROJECT) -> str:
    """Of what the lock was generated from and of what it says (its lines but the stamp): a pin edited by
    hand fails the check as a pyproject.toml changed since `make lock` does."""
    body = "".join(ln for ln in lock_text.splitlines(keepends=True) if not ln.startswith(STAMP))
    data = json.dumps(inputs(pyproject), sort_keys=True) + "\n" + body
    return hashlib.sha256(data.encode()).hexdigest()


def pins(lock: Path = LOCK) -> dict[str, str]:
    out = {}
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#")) and "==" in line:
            name, version = line.split(";")[0].strip().split("==", 1)
            out[canonicalize_name(name)] = version.strip()
    return out


def problems(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> list[str]:
    if not lock.exists():
        return [f"{lock.name} is missing: run `make lock`"]
    text = lock.read_text()
    stamped = next((ln[len(STAMP) :] for ln in text.splitlines() if ln.startswith(STAMP)), None)
    found = []
    if stamped != digest(text, pyproject):
        found.append(f"{lock.name} is not what `make lock` generates from this pyproject.toml: run it")
    project = inputs(pyproject)
    own = canonicalize_name(tomllib.loads(pyproject.read_text())["project"]["name"])
    extras: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    wanted: list[str] = [*project["dependencies"], *(r for rs in extras.values() for r in rs)]  # type: ignore[misc]
    pinned = pins(lock)
    for raw in wanted:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        if name == own:
            continue
        if name not in pinned:
            found.append(f"{lock.name} has no pin for {req.name} (pyproject.toml: {raw}): run `make lock`")
        elif not req.specifier.contains(pinned[name], prereleases=True):
            found.append(f"{lock.name} pins {req.name}=={pinned[name]}, outside pyproject.toml's {raw}")
    return found


def write() -> None:
    """Re-resolve constraints.txt with uv (current pins kept where they still fit) and stamp it."""
    wheels = os.environ.get("TORCH_WHEELS", "/opt/wheels")
    uv = Path(sys.executable).parent / "uv"
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as override:
        override.write(TORCH + "\n")
        override.flush()
        args = [str(uv), *UV_ARGS, "--find-links", wheels, "--override", override.name, "-o", str(LOCK)]
        subprocess.run(args, cwd=ROOT, check=True)
    text = LOCK.read_text()
    lines = [ln for ln in text.splitlines(keepends=True) if not ln.startswith(STAMP)]
    lines.insert(2, f"{STAMP}{digest(text)}\n")
    LOCK.write_text("".join(lines))


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        write()
    found = problems()
    for p in found:
        print(f"check_lock: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
