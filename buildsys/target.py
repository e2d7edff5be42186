"""Code run by the target interpreter (the rootfs's Python, not the one running
build.py): module scans, byte-compiling, its site dirs; and the shipping of module
files it compiles. Isolated (-I -S) so that
nothing of the build host's environment or site packages leaks into the answers."""

from __future__ import annotations

import json
import os
import subprocess

from buildsys.recipe import BuildError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from buildsys.stagedir import Stage


def run_python(python: str, code: str, *args: str, what: str, stdin: str | None = None) -> str:
    """stdout of `code` run by `python` with `args`; BuildError naming `what` on failure."""
    proc = subprocess.run(
        [python, "-I", "-S", "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"{what} with {python} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


COMPILE = r"""
import json, py_compile, sys
for src, cfile, dfile in json.load(sys.stdin):
    py_compile.compile(src, cfile=cfile, dfile=dfile, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def compile_pycs(python: str, jobs: list[tuple[str, str, str]]) -> None:
    """Compile (source, pyc path, displayed path) triples with the target interpreter.

    Unchecked-hash pycs carry no timestamps (reproducible) and are never rewritten:
    the root is read-only in the sandbox.
    """
    if not jobs:
        return
    run_python(python, COMPILE, stdin=json.dumps(jobs), what="byte-compiling")


def ship_modules(stage: Stage, python: str, files: list[str]) -> None:
    """Copy module files into the rootfs at their host paths: .py as sourceless .pyc
    compiled by `python`, anything else (extension modules) as it is."""
    jobs = []
    for file in files:
        if file.endswith(".py"):
            parent = stage.add_host_path(os.path.dirname(file))
            inroot = f"{parent}/{os.path.basename(file)}"
            jobs.append((file, str(stage.root / (inroot.lstrip("/") + "c")), inroot))
        else:
            stage.add_host_path(file)
    compile_pycs(python, jobs)
