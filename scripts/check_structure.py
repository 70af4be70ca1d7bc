"""The layering the code promises (docs/CONTRACTS.md), checked from its own import statements.

    router  <-  experts, registry  <-  eval  <-  deploy

Every `import` / `from … import` in the five packages counts: top-level, lazy (inside a function) and
`if TYPE_CHECKING:` ones alike. Three rules:

1. no upward import: a module imports only its own package and the layers below it (experts and
   registry, on the same layer, do not import each other);
2. no import cycle between modules (strongly connected components of the module graph);
3. no module over MAX_LINES lines;
4. no folder with more than MAX_MODULES modules (its own .py files, `__init__.py` not counted).

`python scripts/check_structure.py` prints every violation and exits 1 if there is one (`make lint`);
tests/test_structure.py runs the same checks."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: package -> the packages it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    "router": frozenset(),
    "experts": frozenset({"router"}),
    "registry": frozenset({"router"}),
    "eval": frozenset({"router", "experts", "registry"}),
    "deploy": frozenset({"router", "experts", "registry", "eval"}),
}
PACKAGES = tuple(ALLOWED)
MAX_LINES = 600
MAX_MODULES = 16


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. deploy.pipeline.ingress
    target: str  # the imported module, e.g. router.types
    line: int


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the five packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or lies inside (a name imported from a module)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(known: dict[str, Path]) -> Iterator[Import]:
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    if not is_package:
                        base = base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from pkg import submodule` imports the submodule (and runs pkg/__init__, which any
                # import of pkg.x does too, so it is not counted as a dependency on pkg itself)
                names = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names
                ]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in ALLOWED:
                    continue
                target = _resolve(name, known)
                if target is not None and target != module:
                    yield Import(module, target, node.lineno)


def upward(found: list[Import]) -> list[str]:
    out = []
    for imp in found:
        src, dst = imp.module.split(".")[0], imp.target.split(".")[0]
        if src != dst and dst not in ALLOWED[src]:
            out.append(f"{imp.module}:{imp.line} imports {imp.target} ({src} may import {_may(src)})")
    return out


def _may(package: str) -> str:
    return ", ".join(sorted(ALLOWED[package])) or "no other package"


def cycles(found: list[Import], known: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in found:
        graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def long_modules(known: dict[str, Path], root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    out = []
    for path in known.values():
        n = len(path.read_text().splitlines())
        if n > limit:
            out.append(f"{path.relative_to(root)}: {n} lines (limit {limit})")
    return out


def crowded_folders(known: dict[str, Path], root: Path = ROOT, limit: int = MAX_MODULES) -> list[str]:
    per_folder: dict[Path, int] = {}
    for path in known.values():
        if path.name != "__init__.py":
            per_folder[path.parent] = per_folder.get(path.parent, 0) + 1
    return [
        f"{folder.relative_to(root)}/: {n} modules (limit {limit})"
        for folder, n in sorted(per_folder.items())
        if n > limit
    ]


def problems(root: Path = ROOT) -> list[str]:
    known = modules(root)
    found = list(imports(known))
    out = [f"upward import: {p}" for p in upward(found)]
    out += [f"import cycle: {' <-> '.join(c)}" for c in cycles(found, known)]
    out += [f"long module: {p}" for p in long_modules(known, root)]
    out += [f"crowded folder: {p}" for p in crowded_folders(known, root)]
    return out


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    known = modules()
    print(f"check_structure: {len(known)} modules, {len(found)} problem(s)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
