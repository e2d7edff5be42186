"""Native packages: Python packages with C or Rust extension modules, shipped whole from
the site directories the recipe names (``[python] site_dirs``), found there by the
target interpreter.

An extension module cannot be imported from gateway.pyz, and a package built for the
interpreter the rootfs carries must come from where that interpreter came from: on
Debian, python3-cryptography and python3-cffi-backend beside /usr/bin/python3 (they
link the libssl, libcrypto and libffi the rootfs already has); under Nix, the store
paths of the same python's packages. Each file keeps its host path, so the SBOM
attributes it to its package as it does every other file.

A package goes in whole (its .py as sourceless bytecode and its extension modules, no
stubs or metadata): compiled code imports Python modules by name, which no static scan
sees. Its imports of the standard library join the stdlib scan. The gateway runs with
``-S``, so the site directories are not on its path: the build writes a ``.pth`` file
naming them into the recipe's ``native_site`` directory, and the gateway calls
``site.addsitedir`` on it only when it needs a native package.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from buildsys.recipe import BuildError, Recipe
from buildsys.target import run_python, ship_modules

TYPE_CHECKING = False
if TYPE_CHECKING:
    from buildsys.stagedir import Stage

PTH_NAME = "native.pth"

# Run by the target interpreter: the extension suffixes it loads, and where each named
# package is found in the recipe's site directories (never its own list, which starts
# with the build host's /usr/local).
LOCATE = r"""
import importlib.machinery as m, json, sys
names, dirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"dirs": dirs, "suffixes": m.EXTENSION_SUFFIXES, "found": {}}
for name in names:
    spec = m.PathFinder.find_spec(name, dirs)
    if spec is not None and spec.origin:
        out["found"][name] = [spec.origin, list(spec.submodule_search_locations or [])]
json.dump(out, sys.stdout)
"""


@dataclass
class NativeSet:
    """The native packages found: host files to ship, module names, their site dirs."""

    files: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    site_dirs: list[str] = field(default_factory=list)


def _package_files(top: str, name: str, suffixes: list[str]) -> tuple[list[str], list[str]]:
    """(files, module names) of the package rooted at `top`: .py and extension modules."""
    files, modules = [], []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, top)
        prefix = name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}"
        for fname in sorted(filenames):
            stem = next((fname[: -len(s)] for s in suffixes if fname.endswith(s)), None)
            if stem is None and fname.endswith(".py"):
                stem = fname[:-3]
            if stem is None:
                continue  # stubs (.pyi), py.typed, data: nothing the interpreter loads
            files.append(os.path.join(dirpath, fname))
            modules.append(prefix if stem == "__init__" else f"{prefix}.{stem}")
    return files, modules


def locate_native(python: str, recipe: Recipe) -> NativeSet:
    """The recipe's native packages as the target interpreter finds them."""
    section = recipe.section("python")
    names = section.get("native", [])
    if not names:
        return NativeSet()
    if not section.get("site_dirs"):
        raise BuildError(
            "the recipe's [python] native needs site_dirs: the distribution's site dir "
            "the packages come from (Debian: /usr/lib/python3/dist-packages)"
        )
    site_dirs = json.dumps(section["site_dirs"])
    output = run_python(
        python, LOCATE, json.dumps(names), site_dirs, what="locating native packages"
    )
    result = json.loads(output)
    native = NativeSet()
    for name in names:
        if name not in result["found"]:
            raise BuildError(
                f"native package {name} is not in {python}'s site dirs {result['dirs']}: "
                "install it for that interpreter (Debian: python3-cryptography, "
                "python3-cffi-backend)"
            )
        origin, locations = result["found"][name]
        if locations:
            files, modules = _package_files(locations[0], name, result["suffixes"])
            site_dir = os.path.dirname(locations[0])
        else:
            files, modules = [origin], [name]
            site_dir = os.path.dirname(origin)
        native.files += files
        native.modules += modules
        if site_dir not in native.site_dirs:
            native.site_dirs.append(site_dir)
    return native


def add_native(stage: Stage, python: str, recipe: Recipe, native: NativeSet) -> int:
    """Ship the native packages at their host paths (.py as sourceless .pyc; extension
    modules join the ELF closure) and the .pth naming their site dirs."""
    if not native.files:
        return 0
    ship_modules(stage, python, native.files)
    site = recipe.section("python")["native_site"]
    # each site dir as the rootfs spells it (symlinks on the way are reproduced)
    lines = [stage.add_host_path(d) for d in native.site_dirs]
    stage.write(f"{site}/{PTH_NAME}", "".join(f"{line}\n" for line in lines).encode())
    return len(native.files)


def check_native_closure(native: NativeSet, modules: dict[str, list]) -> None:
    """Refuse a native package that imports a third-party module the recipe does not
    name (it would be missing in the sandbox); the stdlib ones are shipped by the scan.

    `modules` is the scan's {module name: [file, is_package]}."""
    ours = set(native.modules)
    for name, (file, _is_pkg) in sorted(modules.items()):
        path = Path(file)
        if name not in ours and any(path.is_relative_to(d) for d in native.site_dirs):
            raise BuildError(
                f"a native package imports {name} ({file}), which the recipe's "
                "[python] native list does not name"
            )
