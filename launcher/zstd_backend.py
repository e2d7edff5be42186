"""A zstd decompressing reader: the stdlib on 3.14+, else the vendored zstandard module.

A C extension cannot be imported from inside a zip, so the vendored zstandard
module for this interpreter's ABI is extracted into <cache>/v1/vendor/ with the
same publish protocol as a bundle (work dir, fsync, marker, no-replace rename).
Only the cold path imports this module.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from typing import IO

from launcher.errors import RuntimeMissing
from launcher.layout import MARKER, Layout, make_private_dir

MAX_WINDOW_LOG = 25  # 32 MiB: the build uses 2**24; anything larger is a bomb
READ_SIZE = 1 << 20


def open_reader(raw: IO[bytes], layout: Layout) -> IO[bytes]:
    """Wrap a compressed stream in a decompressing, forward-only reader."""
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        zstandard = import_zstandard(layout)
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
        reader = dctx.stream_reader(raw, read_size=READ_SIZE, read_across_frames=False)
        # tarfile reads 512 B headers and 10 KiB blocks: serve them from a buffer
        # instead of a call into the decoder each.
        return io.BufferedReader(reader, READ_SIZE)
    options = {zstd.DecompressionParameter.window_log_max: MAX_WINDOW_LOG}
    return zstd.ZstdFile(raw, mode="rb", options=options)


def decompression_errors() -> tuple[type[BaseException], ...]:
    """Exception types the active backend raises for corrupt or oversize input."""
    errors: list[type[BaseException]] = []
    zstandard = sys.modules.get("zstandard")
    if zstandard is not None:
        errors.append(zstandard.ZstdError)
    zstd = sys.modules.get("compression.zstd")
    if zstd is not None:
        errors.append(zstd.ZstdError)
    return tuple(errors)


def import_zstandard(layout: Layout):
    """The vendored zstandard module for this ABI, extracted into the cache on first use."""
    from launcher import vendorblob

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
    target = os.path.join(layout.vendor, f"zstandard-{abi}-{vendorblob.blob_tag()}")
    if not os.path.exists(os.path.join(target, MARKER)):
        files = vendorblob.vendor_files(suffix)
        assert files is not None  # has_abi said so
        publish_vendor(layout, target, files)
    sys.path.insert(0, target)
    import zstandard

    return zstandard


def publish_vendor(layout: Layout, target: str, members: list[tuple[str, bytes]]) -> None:
    """Write the vendored package's (name, bytes) into `target` atomically (the bundle
    protocol, in small)."""
    make_private_dir(layout.vendor, "cache directory")
    work = f"{target}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "zstandard"), mode=0o700)
    try:
        for name, data in members:
            dest = os.path.join(work, "zstandard", name)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o500)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        os.close(os.open(os.path.join(work, MARKER), os.O_WRONLY | os.O_CREAT, 0o400))
        try:
            os.rename(work, target)
        except OSError:
            if not os.path.exists(os.path.join(target, MARKER)):
                raise  # someone else won the race only if their marker is there
    finally:
        shutil.rmtree(work, ignore_errors=True)
