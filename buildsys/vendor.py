"""The vendored zstandard: its package for every CPython ABI, packed as one xz blob.

The zipapp holds `_vendor/zstandard.xz` (stored) and a small index
`_vendor/zstandard.json`; launcher/cache/vendorblob.py reads them. A C extension cannot be
imported from a zip, so the launcher extracts its ABI's files into the cache.

Why xz and not zstd: the blob carries the zstd decoder itself, so it must be readable
with the standard library alone (compression.zstd exists only on 3.14+). Measured on
zstandard 0.25.0, x86_64, 4 ABIs, 3.84 MB stripped: deflate per file (the old layout)
1.63 MB, deflate solid 1.63 MB (its 32 KiB window sees no other copy), bz2 solid
1.53 MB, xz solid (LZMA2, 8 MiB dictionary) 0.37 MB, xz with the x86 BCJ filter in
front 0.45 MB. The four .so files are nearly identical; one solid stream whose
dictionary spans them all stores the later three as references to the first.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import subprocess
import tempfile
import zipfile
from pathlib import Path

from buildsys.recipe import BuildError, pinned_requirements
from buildsys.wheels import fetch_wheel

VENDOR_ABIS = ("310", "311", "312", "313")
# The launcher decodes the blob only up to the last file it needs: the ABI of the
# reference host's python3 (Debian 12: 3.11) goes first, then the newer ones.
BLOB_ORDER = ("311", "312", "313", "310")
INDEX_MEMBER = "_vendor/zstandard.json"
BLOB_MEMBER = "_vendor/zstandard.xz"
# 8 MiB covers all four copies (3.8 MB); the decoder needs about this much memory.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 8 << 20}]


def strip_so(data: bytes) -> bytes:
    """Strip a shared object's symbols (binutils), deterministically."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mod.so"
        path.write_bytes(data)
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
        return path.read_bytes()


def vendor_files(machine: str) -> list[tuple[str, str, bytes]]:
    """(abi suffix or "" for every ABI, file name, bytes): zstandard's package init and
    its C module for each CPython ABI, stripped. The launcher's only third-party code."""
    shared: dict[str, bytes] = {}
    modules: list[tuple[str, str, bytes]] = []
    version = pinned_requirements()["zstandard"]
    for abi in VENDOR_ABIS:
        with zipfile.ZipFile(fetch_wheel("zstandard", version, abi, machine)) as whl:
            for member in sorted(whl.namelist()):
                base = member.rsplit("/", 1)[-1]
                if member == "zstandard/__init__.py":
                    data = whl.read(member)
                    if shared.setdefault(base, data) != data:
                        raise BuildError(f"zstandard {version}: {member} differs between ABIs")
                elif member.startswith("zstandard/backend_c.") and base.endswith(".so"):
                    suffix = base[len("backend_c") :]  # ".cpython-311-x86_64-linux-gnu.so"
                    modules.append((suffix, base, strip_so(whl.read(member))))
    if len(modules) != len(VENDOR_ABIS):
        raise BuildError(f"zstandard {version}: expected one C module per ABI {VENDOR_ABIS}")
    modules.sort(key=lambda m: BLOB_ORDER.index(m[0].split("-")[1]))
    return [("", name, data) for name, data in sorted(shared.items())] + modules


def vendor_entries(machine: str) -> list[tuple[str, bytes]]:
    """The zip members: the xz blob of every vendored file and its JSON index."""
    files = vendor_files(machine)
    raw = b"".join(data for _abi, _name, data in files)
    blob = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=XZ_FILTERS)
    index: dict = {
        "format": 1,
        "package": "zstandard",
        "version": pinned_requirements()["zstandard"],
        "codec": "xz",
        "blob_sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(raw),
        "files": [],
    }
    offset = 0
    for abi, name, data in files:
        index["files"].append(
            {
                "abi": abi,
                "name": name,
                "offset": offset,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        offset += len(data)
    encoded = json.dumps(index, indent=1, sort_keys=True).encode() + b"\n"
    return [(BLOB_MEMBER, blob), (INDEX_MEMBER, encoded)]
