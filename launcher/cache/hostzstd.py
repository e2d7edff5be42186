"""A zstd decompressing reader over the host's own libzstd, through ctypes.

Why not the chosen package here: zstandard is a C extension, which cannot be imported
from inside the single file, so its first use on a cold start costs decoding it from the
xz blob (17 ms of LZMA for one ABI), publishing it into the cache with fsyncs, and
importing it: the payload's decoding began about 40 ms after the publish lock was held,
against under 1 ms to dlopen libzstd.so.1 (docs/CACHE.md, "The cold path, in order").
libzstd is on nearly every Linux host (systemd, curl and
the kernel's userspace tools link it); a host without it, or with one older than 1.4.0
(the first whose ZSTD_DCtx_setParameter is stable), gets the vendored zstandard.

The reader decodes one frame and refuses anything after it, refuses a frame whose
window is over the cap (memory is bounded whatever the payload says), and decodes
into the caller's buffer (`readinto`: the ReadAhead thread reuses a few, so no chunk
costs a fresh allocation). ctypes lets go of the GIL for
the length of each call, so decoding overlaps with the writer, as zstandard's does.
"""

from __future__ import annotations

import ctypes
import threading

from launcher.errors import raise_if_out_of_memory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

SONAME = "libzstd.so.1"
MIN_VERSION = 10400  # 1.4.0: ZSTD_DCtx_setParameter and ZSTD_d_windowLogMax are stable
D_WINDOW_LOG_MAX = 100  # ZSTD_d_windowLogMax, from zstd.h's ZSTD_dParameter
READ_SIZE = 1 << 20


class HostZstdError(Exception):
    """The payload does not decode: damaged, truncated or over the window cap."""


class _Buffer(ctypes.Structure):
    """ZSTD_inBuffer and ZSTD_outBuffer (src or dst, size, pos): one layout for both."""

    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


_loaded: list[ctypes.CDLL | None] = []
_loading = threading.Lock()


def library() -> ctypes.CDLL | None:
    """The host's libzstd with its prototypes set, or None when there is none usable."""
    with _loading:
        if not _loaded:
            _loaded.append(_load())
        return _loaded[0]


def _load() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(SONAME)  # the loader's search, not find_library (it forks ldconfig)
        lib.ZSTD_versionNumber.restype = ctypes.c_uint
        if lib.ZSTD_versionNumber() < MIN_VERSION:
            return None
        lib.ZSTD_createDCtx.restype = ctypes.c_void_p
        lib.ZSTD_createDCtx.argtypes = []
        lib.ZSTD_freeDCtx.restype = ctypes.c_size_t
        lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_DCtx_setParameter.restype = ctypes.c_size_t
        lib.ZSTD_DCtx_setParameter.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.ZSTD_decompressStream.restype = ctypes.c_size_t
        lib.ZSTD_decompressStream.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(_Buffer),
            ctypes.POINTER(_Buffer),
        ]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        lib.ZSTD_getErrorName.restype = ctypes.c_char_p
        lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
    except OSError as exc:  # no such library, not an ELF
        raise_if_out_of_memory(exc)
        return None
    except AttributeError:  # a symbol missing
        return None
    return lib


class HostReader:
    """Decodes the first zstd frame of `raw` (forward-only), with a window of at most
    2**window_log bytes. `read(n)` returns up to n bytes, b"" once the frame has ended."""

    def __init__(self, lib: ctypes.CDLL, raw: IO[bytes], window_log: int) -> None:
        self._lib = lib
        self._raw = raw
        self._dctx = lib.ZSTD_createDCtx()
        if not self._dctx:
            raise MemoryError("libzstd could not allocate a decoder")
        self._check(lib.ZSTD_DCtx_setParameter(self._dctx, D_WINDOW_LOG_MAX, window_log))
        self._src = b""
        self._in = _Buffer(None, 0, 0)
        self._raw_ended = False
        self._ended = False

    def _check(self, code: int) -> int:
        if self._lib.ZSTD_isError(code):
            name = self._lib.ZSTD_getErrorName(code) or b"unknown error"
            self.close()
            if name.startswith(b"Allocation error"):  # the window, under a memory limit
                raise MemoryError
            raise HostZstdError(name.decode("ascii", "replace"))
        return code

    def read(self, n: int = -1) -> bytes | bytearray:
        if n is None or n < 0:
            n = READ_SIZE
        if self._ended or n == 0:
            return b""
        out = bytearray(n)
        del out[self.readinto(out) :]
        return out

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Decode into `buf` until it is full or the frame ends; the count (0 at the end)."""
        n = len(buf)
        if self._ended or n == 0:
            return 0
        if not self._dctx:
            raise ValueError("read from a closed HostReader")
        target = (ctypes.c_char * n).from_buffer(buf)
        dst = _Buffer(ctypes.addressof(target), n, 0)
        while dst.pos < n:
            if self._in.pos == self._in.size and not self._raw_ended:
                self._src = self._raw.read(READ_SIZE)
                if self._src:
                    src = ctypes.cast(ctypes.c_char_p(self._src), ctypes.c_void_p)  # no copy
                    self._in = _Buffer(src, len(self._src), 0)
                else:  # the decoder may still hold output: one more call flushes it
                    self._raw_ended = True
            before = dst.pos
            left = self._lib.ZSTD_decompressStream(
                self._dctx, ctypes.byref(dst), ctypes.byref(self._in)
            )
            if self._check(left) == 0:  # the frame is decoded and flushed
                self._ended = True
                self.close()  # its window (up to 2**window_log bytes) is freed now
                if self._in.pos < self._in.size or self._raw.read(1):
                    # the build writes one frame: what follows (garbage, or a second
                    # frame that libzstd might read in a legacy format) is refused
                    raise HostZstdError("data follows the zstd frame")
                break
            if self._raw_ended and dst.pos == before and self._in.pos == self._in.size:
                self.close()
                raise HostZstdError("the data ends inside its zstd frame")
        del target  # a bytearray cannot be resized while ctypes holds its buffer
        return dst.pos

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Free the decoder (idempotent)."""
        dctx, self._dctx = self._dctx, None
        if dctx:
            self._lib.ZSTD_freeDCtx(dctx)
        self._src = b""

    def __del__(self) -> None:
        self.close()


def open_host_reader(raw: IO[bytes], window: int) -> HostReader | None:
    """A HostReader of `raw` capped at `window` bytes, or None without a usable libzstd."""
    lib = library()
    if lib is None:
        return None
    try:
        return HostReader(lib, raw, window.bit_length() - 1)
    except MemoryError:  # libzstd could not allocate a decoder: the vendored one may
        return None
