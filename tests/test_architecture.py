"""The layout's rules (docs/architecture.md), checked on every import — also those inside functions:

1. no product module imports a test harness (a ``testing/`` folder) or a benchmark (``bench/``);
2. every import between rooms follows an allowed arrow (``ARROWS``): lower rooms never import
   higher ones;
3. no import cycle between modules (ci/'s scripts included);
4. every product module is used: imported by product code, or an entry point something runs;
5. no folder holds more than ~15 modules.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from common import REPO_ROOT

PACKAGES = ("images", "staging", "trial", "devcluster", "bench")
SINGLE_MODULES = ("errors", "common", "tasks")
PRODUCT_ROOMS = (
    "errors", "common", "tasks", "images", "devcluster",
    "staging.paths", "staging.stores", "staging",
    "trial.expconf", "trial.engine", "trial.ui", "trial.settings", "trial.runtime", "trial.verbs",
    "trial",
)  # fmt: skip
HARNESS_ROOMS = ("staging.testing", "trial.testing")
BENCH_ROOMS = ("bench",)
BASE = {"errors", "common"}
# room -> the rooms it may import besides itself (docs/architecture.md draws them).
ARROWS: dict[str, set[str]] = {
    "errors": set(),
    "common": set(),
    "images": BASE,
    "devcluster": BASE | {"images"},  # a local Determined cluster; podman shares buildah's storage
    "staging.paths": BASE,
    "staging.stores": BASE | {"staging.paths"},
    "staging": BASE | {"staging.paths", "staging.stores"},
    "trial.expconf": BASE,
    "trial.ui": BASE,
    "trial.engine": BASE | {"staging", "staging.paths"},
    "trial.settings": BASE | {"trial.engine", "staging", "staging.paths"},
    "trial.runtime": BASE
    | {"trial.settings", "trial.engine", "trial.expconf", "trial.ui", "staging", "staging.paths"},
    "trial.verbs": BASE
    | {"trial.runtime", "trial.settings", "trial.engine", "trial.expconf", "trial.ui"}
    | {"images", "staging", "staging.paths"},
    "trial": BASE | {"trial.runtime", "trial.settings", "trial.engine", "trial.ui"},
    "tasks": BASE | {"trial.verbs", "trial.settings", "staging", "images", "devcluster"},
    # harnesses serve the room beside them; benchmarks may use any product room and harness
    "staging.testing": BASE | {"staging", "staging.paths", "staging.stores"},
    "trial.testing": BASE | {"trial.runtime", "trial.settings", "trial.engine"},
    "bench": set(PRODUCT_ROOMS) | set(HARNESS_ROOMS),
}
# Modules a process runs by name (python -m …), never imported by product code.
ENTRY_POINTS = {
    "tasks", "trial.__main__", "staging.__main__", "devcluster.__main__",
    "trial.settings.pretrained",
}  # fmt: skip
MAX_MODULES = 15


@cache
def modules() -> dict[str, Path]:
    """Every Python module of the packages above, by dotted name (a package by its own name)."""
    found = {name: REPO_ROOT / f"{name}.py" for name in SINGLE_MODULES}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if not (path.parent / "__init__.py").is_file():
                continue  # a folder of scripts (images/scripts/ runs inside the image)
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def room(module: str) -> str:
    """The room a module lives in: a subpackage of trial/ or staging/, staging/paths.py (the pure
    base the stores build on), or the top-level package or module."""
    parts = module.split(".")
    if module == "staging.paths":
        return module
    if parts[0] in ("trial", "staging") and len(parts) > 1 and parts[1] in SUBPACKAGES[parts[0]]:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


SUBPACKAGES = {
    "trial": ("expconf", "engine", "ui", "settings", "runtime", "verbs", "testing"),
    "staging": ("stores", "testing"),
}


@cache
def imports() -> dict[str, set[str]]:
    """module -> the project's modules it imports (``from a import b`` names a.b when that is a
    module, else a), at any depth of the file."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {_owner(alias.name, known) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(known)
                found |= subs or {_owner(node.module, known)}
        graph[name] = {m for m in found if m and m != name}
    return graph


def _owner(dotted: str, known: dict[str, Path]) -> str:
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted


def product(module: str) -> bool:
    return room(module) in PRODUCT_ROOMS


def test_every_module_has_a_room_with_arrows():
    assert {m: room(m) for m in modules() if room(m) not in ARROWS} == {}


def test_no_product_module_imports_a_harness_or_a_benchmark():
    offenders = {
        module: sorted(d for d in deps if room(d) in HARNESS_ROOMS + BENCH_ROOMS)
        for module, deps in imports().items()
        if product(module)
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_imports_follow_the_allowed_arrows():
    wrong = {
        f"{module} -> {dep}": f"{room(module)} may not import {room(dep)}"
        for module, deps in imports().items()
        for dep in deps
        if room(dep) != room(module) and room(dep) not in ARROWS[room(module)]
    }
    assert wrong == {}


def test_no_import_cycles():
    graph = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_every_product_module_is_used_by_product_code():
    used = {dep for module, deps in imports().items() if product(module) for dep in deps}
    run_by_name = set(re.findall(r"-m ([a-z_.]+)", _product_scripts())) | _named_in_product()
    unused = {
        m
        for m, path in modules().items()
        if product(m) and path.name != "__init__.py"
        and m not in used | ENTRY_POINTS | run_by_name
    }  # fmt: skip
    assert unused == set()


def _named_in_product() -> set[str]:
    """Modules product code names in a string (imported by name: staging's store registry)."""
    names = set()
    for module, path in modules().items():
        if product(module):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in modules():
                    names.add(node.value)
    return names


def _product_scripts() -> str:
    """What runs product modules by name: the startup hook and the setup script."""
    return "\n".join(
        (REPO_ROOT / name).read_text() for name in ("hooks/startup-hook.sh", "ci/setup.sh")
    )


def test_ci_scripts_import_each_other_without_cycles():
    """ci/'s scripts import their siblings by bare name (gpucheck -> gpucheck_carry)."""
    scripts = {p.stem: p for p in (REPO_ROOT / "ci").glob("*.py")}
    graph = {}
    for name, path in scripts.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
        graph[name] = found & set(scripts)
    for name, deps in graph.items():
        for dep in deps:
            assert name not in _reachable(graph, dep), f"ci/{name}.py and ci/{dep}.py: a cycle"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


@pytest.mark.parametrize("package", PACKAGES)
def test_no_folder_holds_more_than_about_fifteen_modules(package):
    crowded = {
        str(folder.relative_to(REPO_ROOT)): count
        for folder in [REPO_ROOT / package, *(REPO_ROOT / package).rglob("*/")]
        if "__pycache__" not in folder.parts
        and (count := len(list(folder.glob("*.py")))) > MAX_MODULES
    }
    assert crowded == {}
