"""Code run by the target interpreter (the rootfs's Python, not the one running
build.py): module scans, byte-compiling, its site dirs. Isolated (-I -S) so that
nothing of the build host's environment or site packages leaks into the answers."""

from __future__ import annotations

import subprocess

from buildsys.recipe import BuildError


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
