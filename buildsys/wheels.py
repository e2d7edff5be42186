"""Pinned wheels: fetched once into a local cache (pip download), then reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from buildsys.recipe import HERE, BuildError

WHEEL_CACHE = HERE / "build" / "wheels"


def fetch_wheel(name: str, version: str, abi: str | None, machine: str) -> Path:
    """A wheel from the local cache, downloaded with pip on first use."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    stem = name.lower().replace("-", "_")  # wheel file names use the normalized name
    pattern = f"{stem}-{version}-" + (f"cp{abi}-cp{abi}-*{machine}*.whl" if abi else "py3-*.whl")
    hits = sorted(WHEEL_CACHE.glob(pattern))
    if hits:
        return hits[0]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["-d", str(WHEEL_CACHE), f"{name}=={version}"]
    if abi:
        cmd += ["--python-version", abi, "--implementation", "cp", "--abi", f"cp{abi}"]
        cmd += ["--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_17_{machine}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    hits = sorted(WHEEL_CACHE.glob(pattern))
    if proc.returncode != 0 or not hits:
        raise BuildError(
            f"cannot fetch wheel {name}=={version} (cp{abi or '-'}, {machine}): "
            f"{proc.stderr.strip().splitlines()[-1:] or 'no match'}"
        )
    return hits[0]
