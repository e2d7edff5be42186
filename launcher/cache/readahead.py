"""Decompression in a second thread, a bounded number of large chunks ahead of the writer.

python-zstandard (and the stdlib's compression.zstd) release the GIL while they decode,
as hashlib does while it hashes and os.write while it writes: with the decoder in its own
thread, decoding overlaps with creating the files. At most `depth` chunks wait in the
queue, so memory stays bounded by (depth + 2) * chunk_size whatever the stream holds.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import IO

__all__ = ["ReadAhead"]

CHUNK_SIZE = 1 << 20
DEPTH = 4

Source = IO[bytes] | Callable[[], IO[bytes]]


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
        self._queue: deque[bytes] = deque()
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

    def _put(self, data: bytes) -> None:
        with self._cond:
            while len(self._queue) >= self._depth and not self._closed:
                self._cond.wait()
            if self._closed:
                raise _Closed
            self._queue.append(data)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            source = self._source
            stream = source if hasattr(source, "read") else source()  # type: ignore[operator]
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

    def chunk(self) -> bytes:
        """The next chunk (at most chunk_size bytes), b"" at the end of the stream."""
        with self._cond:
            while not self._queue and self._error is None and not self._eof:
                if self._closed:
                    raise ValueError("read from a closed ReadAhead")
                self._cond.wait()
            if self._queue:
                data = self._queue.popleft()
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
            self._cond.notify_all()
        self._thread.join()
