"""doctor's zstd line: the decoder a cold start would use (the host's libzstd, else the
stdlib's on 3.14+, else the vendored zstandard for this ABI), or why there is none."""

from __future__ import annotations

import sys

from launcher import embedded
from launcher.doctor.finding import Finding
from launcher.errors import ExitCode, LauncherError


def check_zstd() -> Finding:
    """The decoder a cold start would use: the host's libzstd, the stdlib's, the vendored."""
    try:
        from launcher.cache.hostzstd import library

        lib = library()
    except ImportError:  # no ctypes
        lib = None
    if lib is not None:
        v = lib.ZSTD_versionNumber()
        return Finding("zstd", True, f"the host's libzstd {v // 10000}.{v // 100 % 100}.{v % 100}")
    if sys.version_info >= (3, 14):
        return Finding("zstd", True, "compression.zstd (standard library)")
    from importlib.machinery import EXTENSION_SUFFIXES

    from launcher.cache import vendorblob

    suffix = EXTENSION_SUFFIXES[0]

    try:
        vendored = vendorblob.has_abi(suffix)
    except OSError as exc:
        return Finding("zstd", False, f"cannot read the single file: {exc}", embedded.REBUILD)
    except LauncherError as exc:
        return Finding("zstd", False, exc.message, exc.fix or "")
    if vendored:
        return Finding("zstd", True, f"vendored zstandard for {suffix.strip('.')}")
    return Finding(
        "zstd",
        False,
        f"no libzstd 1.4.0 or later on this host, and no vendored zstandard for {suffix}",
        "install libzstd (zstd's library package), or use Python 3.10-3.13 or 3.14+",
        exit_code=ExitCode.RUNTIME_MISSING,
    )
