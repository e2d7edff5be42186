"""Decompression in a second thread, a bounded number of large chunks ahead of the writer.

python-zstandard (and the stdlib's compression.zstd) release the GIL while they decode,
as hashlib does while it hashes and os.write while it writes: with the decoder in its own
thread, decoding overlaps with creating the files. At most `depth` chunks wait in the
queue, so memory stays bounded by (depth + 2) * chunk_size whatever the stream holds.

A source with `readinto` is read into depth + 2 buffers that go round: a chunk handed
out is valid until the next call, when its buffer is given back for reuse. A fresh
1 MiB bytearray per chunk cost the decoding thread a memset and up to 256 page faults
each: up to a tenth of its time on a cold start (perf, 48 chunks; less when the heap
handed back pages it had mapped already).
"""

from __future__ import annotations

import threading
from collections import deque

TYPE_CHECKING = False  # typing costs a cold start milliseconds before decoding begins
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO

    Source = IO[bytes] | Callable[[], IO[bytes]]

__all__ = ["ReadAhead"]

CHUNK_SIZE = 1 << 20
DEPTH = 4


class _Closed(Exception):
    """The consumer closed the ReadAhead; the thread stops."""


class ReadAhead:
    """Reads `source` in a thread; `chunk()` returns the next piece, b"" at the end.

    `source` is a readable stream (e.g. an already constructed decompressing reader) or a
    callable that returns one; a callable is called in the thread, so building the
    decoder overlaps too and its exceptions arrive like read errors. Any exception of
    the thread is raised by `chunk()` once the chunks read before it are consumed. The
    source is not closed: its owner closes it after `close()` has returned.
    """

    def __init__(self, source: Source, chunk_size: int = CHUNK_SIZE, depth: int = DEPTH) -> None:
        if depth < 1 or chunk_size < 1:
            raise ValueError("depth and chunk_size must be positive")
        self._source = source
        self._chunk_size = chunk_size
        self._depth = depth
        self._queue: deque[tuple[memoryview | bytes, bytearray | None]] = deque()
        self._free: list[bytearray] = []  # buffers given back by the consumer
        self._lent: bytearray | None = None  # the buffer of the chunk last handed out
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="auto-review-readahead")
        self._thread.daemon = True  # never keeps the interpreter alive on a stuck read
        self._thread.start()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _put(self, data: memoryview | bytes, buf: bytearray | None = None) -> None:
        with self._cond:
            while len(self._queue) >= self._depth and not self._closed:
                self._cond.wait()
            if self._closed:
                raise _Closed
            self._queue.append((data, buf))
            self._cond.notify_all()

    def _buffer(self) -> bytearray:
        """A buffer to read into: one given back, else a new one. No more than depth + 2
        are ever made: when this is called, at most depth wait in the queue (_put bounds
        it) and one is lent to the consumer."""
        with self._cond:
            if self._free:
                return self._free.pop()
        return bytearray(self._chunk_size)

    def _run(self) -> None:
        try:
            source = self._source
            stream = source if hasattr(source, "read") else source()  # type: ignore[operator]
            readinto = getattr(stream, "readinto", None)
            if readinto is not None:
                while True:
                    buf = self._buffer()
                    got = readinto(buf) or 0
                    self._put(memoryview(buf)[:got], buf)
                    if not got:
                        return
            read = stream.read  # type: ignore[union-attr]
            size = self._chunk_size
            while True:
                data = read(size)
                self._put(data)
                if not data:
                    return
        except _Closed:
            return
        except BaseException as exc:  # handed to the consumer, who decides
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def chunk(self) -> memoryview | bytes:
        """The next chunk (at most chunk_size bytes), empty at the end of the stream.
        It is valid until the next call, which gives its buffer back for reuse."""
        with self._cond:
            if self._lent is not None:
                self._free.append(self._lent)
                self._lent = None
                self._cond.notify_all()
            while not self._queue and self._error is None and not self._eof:
                if self._closed:
                    raise ValueError("read from a closed ReadAhead")
                self._cond.wait()
            if self._queue:
                data, self._lent = self._queue.popleft()
                if not data:
                    self._eof = True
                self._cond.notify_all()
                return data
            if self._error is not None:
                raise self._error
            return b""

    __call__ = chunk

    def close(self) -> None:
        """Stop the thread (after the read it is in, if any) and drop queued chunks."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._free.clear()
            self._lent = None
            self._cond.notify_all()
        self._thread.join()
