"""The staging package's imports: nothing from the trial (the layer above it), and no cycles
(bench.py and bench_net.py used to import each other). Every import counts, also those inside
functions."""

from __future__ import annotations

import ast
from pathlib import Path

STAGING = Path(__file__).resolve().parents[2] / "staging"


def _imports() -> dict[str, set[str]]:
    """module -> every module it imports (``from staging import x`` -> staging.x, or the package)."""
    modules = {p.stem: p for p in STAGING.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for stem, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = {f"{node.module}.{a.name}" for a in node.names}
                found |= {n for n in names if n.removeprefix("staging.") in modules} or {
                    node.module
                }
        graph["staging" if stem == "__init__" else f"staging.{stem}"] = found
    return graph


def test_no_staging_module_imports_the_trial():
    offenders = {
        mod: sorted(d for d in deps if d == "trial" or d.startswith("trial."))
        for mod, deps in _imports().items()
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_staging_imports_have_no_cycles():
    imports = _imports()
    graph = {m: {d for d in deps if d in imports} for m, deps in imports.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            assert state.get(dep) != 1, " -> ".join([*path, mod, dep])
            if dep not in state:
                visit(dep, [*path, mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
