"""Stdlib closure: the modules the gateway imports, found and byte-compiled by the
target interpreter itself."""

from __future__ import annotations

import json
from pathlib import Path

from buildsys.native import NativeSet, add_native, check_native_closure, locate_native
from buildsys.recipe import Recipe
from buildsys.target import run_python, ship_modules

TYPE_CHECKING = False
if TYPE_CHECKING:
    from buildsys.stagedir import Stage


MODULE_SCAN = r"""
import json, sys
from modulefinder import ModuleFinder
gateway, extra, exclude, site_dirs = sys.argv[1], *map(json.loads, sys.argv[2:5])
finder = ModuleFinder(path=[gateway] + sys.path[1:] + site_dirs, excludes=exclude)
finder.run_script(gateway + "/__main__.py")
for name in extra:
    finder.import_hook(name)
if "sysconfig" in finder.modules:  # it imports its data by a name computed at run time
    import sysconfig
    finder.import_hook(sysconfig._get_sysconfigdata_name())
out = {}
for name, mod in finder.modules.items():
    if mod.__file__:
        out[name] = [mod.__file__, bool(mod.__path__)]
json.dump({"modules": out, "stdlib": sys.path[1:]}, sys.stdout)
"""


def scan_python_modules(
    python: str, gateway: Path, recipe: Recipe, native: NativeSet
) -> dict[str, Path]:
    """Stdlib module files the gateway and the native packages need, computed by the
    target interpreter.

    Returns {module file (host path): stdlib dir it lives under}.
    """
    section = recipe.section("python")
    output = run_python(
        python,
        MODULE_SCAN,
        str(gateway),
        json.dumps(section.get("extra", []) + native.modules),
        json.dumps(section.get("exclude", [])),
        json.dumps(native.site_dirs),
        what="module scan",
    )
    result = json.loads(output)
    check_native_closure(native, result["modules"])
    stdlib_dirs = [Path(p) for p in result["stdlib"] if p]
    files: dict[str, Path] = {}
    for file, _is_pkg in result["modules"].values():
        path = Path(file)
        for d in stdlib_dirs:
            if path.is_relative_to(d) and path.exists():
                files[str(path)] = d
                break
    return files


def python_tag(python: str) -> str:
    """The cache tag of the target interpreter, e.g. cpython-311."""
    code = "import sys; print(sys.implementation.cache_tag)"
    return run_python(python, code, what="asking the cache tag").strip()


def add_python(stage: Stage, python: str, recipe: Recipe, gateway: Path) -> int:
    """Ship the stdlib modules the gateway imports, as sourceless bytecode, the
    extension modules (whose libraries join the ELF closure) and the recipe's native
    packages (buildsys.native).

    `os.pyc` beside where `os.py` would be: Python 3.11+ accepts it as the stdlib
    landmark and imports it without a source. Tracebacks keep file and line; the
    sources would add 0.5 MB to the single file.
    """
    native = locate_native(python, recipe)
    modules = scan_python_modules(python, gateway, recipe, native)
    ship_modules(stage, python, sorted(modules))
    return len(modules) + add_native(stage, python, recipe, native)
