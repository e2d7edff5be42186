"""The code's layout: no import circles, the launcher's layers, short modules.

Imports are read from the source (ast), lazy ones inside functions and those under
`if TYPE_CHECKING:` included: a circle through a lazy import is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 300
OVER = "Over 300 lines: "
# Top first; a layer may import the layers below it, never one above. Modules in one
# layer (a tuple) are independent: none imports another.
LAUNCHER_LAYERS = [
    ("bootstrap",),
    ("cli",),
    ("doctor", "image"),
    ("sandbox",),
    ("cache",),
    ("embedded",),
    ("manifest", "hostfile", "jsonwrite", "progress"),
    ("errors",),
]


def modules(package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of a top-level package of the repository."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path], scripts: str = "") -> set[str]:
    """The modules of `known` that `path` imports anywhere in its code (`scripts`: a
    package whose modules import each other by bare name, run from their directory)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            if scripts and f"{scripts}.{name}" in known:
                name = f"{scripts}.{name}"
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph(*packages: str, scripts: str = "") -> dict[str, set[str]]:
    """Module -> the modules it imports, over `packages`. A package's __init__ is no
    edge (`from launcher import embedded`): each is a docstring only (tested below)."""
    known = {name: path for p in packages for name, path in modules(p).items()}
    return {
        name: {
            dep
            for dep in imports(path, known, scripts)
            if dep != name and known[dep].name != "__init__.py"
        }
        for name, path in known.items()
    }


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.mark.parametrize("package", ["launcher", "buildsys", "bench"])
def test_no_import_circles(package: str) -> None:
    edges = graph(package, scripts="bench" if package == "bench" else "")
    assert any(edges.values()), "no imports found: the graph is not read right"
    assert circles(edges) == []


def layer_of(top: str) -> int | None:
    """The depth of a launcher top-level module or package in LAUNCHER_LAYERS."""
    for depth, layer in enumerate(LAUNCHER_LAYERS):
        if top in layer:
            return depth
    return None


def test_launcher_layers_import_only_downwards() -> None:
    """bootstrap > cli > doctor | image > sandbox > cache > embedded > manifest |
    hostfile | jsonwrite | progress > errors; and never the build code."""
    edges = graph("launcher", "buildsys")
    wrong = []
    for module, deps in sorted(edges.items()):
        if not module.startswith("launcher."):
            continue
        top = module.split(".")[1]
        here = layer_of(top)
        assert here is not None, f"{module} is in no layer"
        for dep in sorted(deps):
            if dep.startswith("buildsys"):
                wrong.append(f"{module} -> {dep}")
                continue
            dep_top = dep.split(".")[1]
            there = layer_of(dep_top)
            if dep_top != top and (there is None or there <= here):
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def test_launcher_package_inits_are_docstrings_only() -> None:
    """A package's __init__ runs on every import of it: the warm path must not grow."""
    for init in sorted((ROOT / "launcher").rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), init
        assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


@pytest.mark.parametrize("package", ["launcher", "buildsys", "bench"])
def test_long_modules_say_why(package: str) -> None:
    """A module over 300 lines says why in its docstring, on a line of its own."""
    unexplained = []
    for path in sorted((ROOT / package).rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(
            line.startswith(OVER) and line[len(OVER) :].strip() for line in doc.splitlines()
        ):
            unexplained.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert unexplained == []
