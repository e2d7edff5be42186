"""A zstd decompressing reader: the host's libzstd (launcher.cache.hostzstd), else the
stdlib's on 3.14+, else the vendored zstandard module.

The host's library comes first on every version, 3.14's included: its reader decodes
exactly one frame and refuses what follows, where the stdlib's ZstdFile would go on to
a second frame, which libzstd may read in a legacy format whose decoder ignores the
window cap. A C extension cannot be imported from inside a zip, so the vendored
zstandard module for this interpreter's ABI is published into <cache>/v1/vendor/
through the cache's one publish protocol, like a bundle. Only the cold path imports
this module.
"""

from __future__ import annotations

import io
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES

from launcher.cache import publish
from launcher.cache.paths import Layout, ensure_level, refuse_noexec
from launcher.errors import PayloadCorrupt, RuntimeMissing, raise_if_out_of_memory

TYPE_CHECKING = False  # typing costs a cold start milliseconds before decoding begins
if TYPE_CHECKING:
    from typing import IO

MAX_WINDOW_LOG = 25  # 32 MiB: the build uses a 16 MiB window (2**24); larger is a bomb
POLICY_PREFIX = "PYTHON_ZSTANDARD_"
REBUILD = "download auto-review again (or rebuild it with: python3 build.py)"
READ_SIZE = 1 << 20
FRAME_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first 4 bytes, 0xFD2FB528 (RFC 8878 3.1.1)


def open_reader(raw: IO[bytes], layout: Layout, window: int = 1 << MAX_WINDOW_LOG) -> IO[bytes]:
    """Wrap a compressed stream in a decompressing, forward-only reader that refuses a
    frame needing more than `window` bytes (never more than 2**MAX_WINDOW_LOG)."""
    window = min(window, 1 << MAX_WINDOW_LOG)
    raw = FramesOnly(raw)
    try:
        from launcher.cache.hostzstd import open_host_reader
    except ImportError:  # a Python built without ctypes
        open_host_reader = None
    host = open_host_reader(raw, window) if open_host_reader else None
    if host is not None:
        return host  # type: ignore[return-value]
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        zstandard = import_zstandard(layout)
        dctx = zstandard.ZstdDecompressor(max_window_size=window)
        reader = dctx.stream_reader(raw, read_size=READ_SIZE, read_across_frames=False)
        # tarfile reads 512 B headers and 10 KiB blocks: serve them from a buffer
        # instead of a call into the decoder each.
        return io.BufferedReader(reader, READ_SIZE)
    options = {zstd.DecompressionParameter.window_log_max: window.bit_length() - 1}
    return zstd.ZstdFile(raw, mode="rb", options=options)


class FramesOnly:
    """`raw`, refused unless it starts with a zstd frame's magic number.

    A host's libzstd (and so the stdlib's module on 3.14+) is usually built with legacy
    support: it decodes the pre-1.0 formats (v0.5-v0.7) too, whose streaming decoder
    allocates the window their header asks for, up to 128 MiB, whatever
    ZSTD_d_windowLogMax says. The build only writes zstd frames, so nothing else is read.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        if self._checked:
            return self._raw.read(n)
        head = b""
        while len(head) < len(FRAME_MAGIC):
            data = self._raw.read(max(n if n is not None and n > 0 else READ_SIZE, 4))
            if not data:
                break
            head += data
        if not head.startswith(FRAME_MAGIC):
            raise PayloadCorrupt(
                "the embedded payload is damaged: it does not start with a zstd frame"
                f" (its first bytes are {head[:4].hex() or 'missing'})",
                REBUILD,
            )
        self._checked = True
        return head

    def readable(self) -> bool:
        return True


def decompression_errors() -> tuple[type[BaseException], ...]:
    """Exception types the active backend raises for corrupt or oversize input."""
    errors: list[type[BaseException]] = []
    zstandard = sys.modules.get("zstandard")
    if zstandard is not None:
        errors.append(zstandard.ZstdError)
    host = sys.modules.get("launcher.cache.hostzstd")
    if host is not None:
        errors.append(host.HostZstdError)
    zstd = sys.modules.get("compression.zstd")
    if zstd is not None:
        errors.append(zstd.ZstdError)
    return tuple(errors)


def import_zstandard(layout: Layout):
    """The vendored zstandard module for this ABI, published into the cache on first use.

    zstandard reads PYTHON_ZSTANDARD_IMPORT_POLICY from os.environ (even under -I) to
    pick its backend; no environment variable may choose which code we load.
    """
    from launcher.cache import vendorblob

    for name in [n for n in os.environ if n.startswith(POLICY_PREFIX)]:
        del os.environ[name]
    suffix = EXTENSION_SUFFIXES[0] if EXTENSION_SUFFIXES else ""
    if not vendorblob.has_abi(suffix):
        try:
            import zstandard  # an installed copy still works

            return zstandard
        except ImportError:
            pass
        raise RuntimeMissing(
            f"no zstd decoder for Python {sys.version_info.major}.{sys.version_info.minor}"
            f" ({suffix or 'unknown ABI'})",
            "run auto-review with Python 3.10-3.13 or 3.14+, or pip install zstandard",
        )
    abi = suffix.strip(".").split(".")[0]
    ensure_level(layout.vendor, "cache directory")
    target = layout.vendor_dir("zstandard", abi, vendorblob.blob_tag())
    publish.publish(
        target,
        lambda work: fill_vendor(work, vendorblob.vendor_files(suffix) or []),
        waiting_for="finish unpacking the zstd decoder",
    )
    refuse_noexec(target, "the zstd decoder (a native module) cannot load from it")
    sys.path.insert(0, target)
    try:
        import zstandard
    except ImportError as exc:
        raise_if_out_of_memory(exc)
        raise RuntimeMissing(
            f"the vendored zstd decoder does not load: {exc}",
            "run auto-review with Python 3.10-3.13 or 3.14+, or pip install zstandard",
        ) from None
    return zstandard


def fill_vendor(work: str, files: list[tuple[str, bytes]]) -> None:
    """The publish step for the vendored package: work/zstandard/<name> for each file."""
    if not files:
        raise RuntimeMissing("the vendored zstd decoder is missing from this file", REBUILD)
    os.mkdir(os.path.join(work, "zstandard"), 0o700)
    for name, data in files:
        dest = os.path.join(work, "zstandard", name)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o500)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
