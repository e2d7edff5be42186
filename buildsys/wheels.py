"""Pinned wheels: fetched once into a local cache; the vendored zstandard modules."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from buildsys.recipe import HERE, BuildError, pinned_requirements

WHEEL_CACHE = HERE / "build" / "wheels"
VENDOR_ABIS = ("310", "311", "312", "313")


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


def strip_so(data: bytes) -> bytes:
    """Strip a shared object's symbols (binutils), deterministically."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mod.so"
        path.write_bytes(data)
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
        return path.read_bytes()


def vendor_entries(machine: str) -> list[tuple[str, bytes]]:
    """_vendor/zstandard: the package init and its C module for each CPython ABI, stripped.

    The launcher's only third-party code. A C extension cannot be imported from a
    zip: the launcher extracts the one matching its interpreter into the cache.
    """
    entries: list[tuple[str, bytes]] = []
    version = pinned_requirements()["zstandard"]
    for abi in VENDOR_ABIS:
        with zipfile.ZipFile(fetch_wheel("zstandard", version, abi, machine)) as whl:
            for member in whl.namelist():
                base = member.rsplit("/", 1)[-1]
                if member == "zstandard/__init__.py" or base.startswith("backend_c."):
                    data = whl.read(member)
                    if base.endswith(".so"):
                        data = strip_so(data)
                    entries.append((f"_vendor/{member}", data))
    return sorted(dict(entries).items())
