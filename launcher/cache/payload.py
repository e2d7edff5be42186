"""The embedded payload, decoding in a thread from the moment a cold start holds the
version's publish lock.

Decoding the rootfs.tar.zst is the longest step of a cold start, so that thread does
nothing else: it starts before the unpacking code is imported (importing it, writing
the launcher's code cache and setting up the work dir then overlap with it), reads the
stored bytes straight from the single file, and decodes them (the host's libzstd, else
the zstd module published into the cache: launcher.cache.zstd), a bounded number of
chunks ahead (launcher.cache.readahead). The manifest's sha256 of the same bytes is
computed by a third thread on the core the writer leaves idle. Only the cold path
imports this module.
"""

from __future__ import annotations

import os
import threading

from launcher import embedded
from launcher.cache import zstd
from launcher.cache.readahead import ReadAhead
from launcher.manifest import window_bytes
from launcher.progress import Progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from launcher.cache.paths import Layout


class StoredReader:
    """The stored payload, read forward with pread (no CRC pass: the digest covers it),
    each byte counted by the progress line."""

    def __init__(self, fd: int, offset: int, size: int, progress: Progress) -> None:
        self.fd = fd
        self.pos = offset
        self.end = offset + size
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        left = self.end - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.pos)
        if not data:
            raise EOFError("the single file ends inside its payload")
        self.pos += len(data)
        self.progress(len(data))
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


def yield_cpu() -> None:
    """Lower the calling thread's priority to the least (Linux: a nice value is per
    thread). For the digest's thread beside the decoder, which sets the pace of a cold
    start: with it (and a code dir's writer, since gone) runnable too, 4 threads shared
    2 cores and the decoder lost its own; at nice 19 they ran when a core was idle (the
    writer waits on the decoder often), and a cold start took 4-9 ms less (median of 25
    and 40 interleaved runs). Only a thread that spends its time without the GIL may
    yield so (hashlib and pread let go of it): a thread at nice 19 that is descheduled
    while it holds the GIL stops every other thread of the process."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass


class Digest:
    """The sha256 of the stored payload, computed in a thread of its own (hashlib lets
    go of the GIL while it hashes). Reads the same fd as the decoder: the same file."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.hexdigest: str | None = None  # None: not computed (a short file)
        self._error: BaseException | None = None  # raised by matches(), in the caller
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, args=(fd, offset, size), name="auto-review-digest", daemon=True
        )
        self._thread.start()

    def _run(self, fd: int, offset: int, size: int) -> None:
        yield_cpu()
        try:
            import hashlib

            sha = hashlib.sha256()
            end = offset + size
            while offset < end and not self._stop:
                data = os.pread(fd, min(zstd.READ_SIZE, end - offset), offset)
                if not data:
                    return
                sha.update(data)
                offset += len(data)
            if offset == end:
                self.hexdigest = "sha256:" + sha.hexdigest()
        except OSError:
            return  # not computed: the payload does not match
        except BaseException as exc:  # MemoryError: for the caller, not a thread traceback
            self._error = exc

    def matches(self, digest: str) -> bool:
        """Whether the whole stored payload hashes to `digest` ('sha256:<hex>')."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.hexdigest == digest

    def stop(self) -> None:
        self._stop = True
        self._thread.join()


class Decoding:
    """The payload of `manifest` being decoded: `chunks()` hands out the tar stream,
    `digest` checks the stored bytes. The decoder (and the zstd module it needs) is set
    up in the thread; its errors arrive from `chunks()`. Close it when done."""

    def __init__(self, layout: Layout, manifest: dict[str, Any], quiet: bool) -> None:
        label = f"auto-review: unpacking {manifest.get('version', '?')}"
        self.progress = Progress(label, int(manifest["compressed_size"]), enabled=not quiet)
        self.fd, offset, size = embedded.payload_span(int(manifest["compressed_size"]))
        try:
            reader = StoredReader(self.fd, offset, size, self.progress)
            window = window_bytes(manifest)
            self.chunks = ReadAhead(lambda: zstd.open_reader(reader, layout, window))
            self.digest = Digest(self.fd, offset, size)
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        """Stop the threads (after the read each is in) and close the stored payload."""
        try:
            self.chunks.close()
            self.digest.stop()
        finally:
            os.close(self.fd)

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is not None:  # the run ends: a decoder waiting for a lock stops now
            from launcher.cache import locks

            locks.abandon_waits()
        self.close()
