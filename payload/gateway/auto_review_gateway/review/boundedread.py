"""Reading git's output as it comes, through a window of bounded size.

A :class:`Reader` hands out records (lines, or NUL-terminated fields) no longer than
the caller allows, and skips ahead to a marker without keeping what it passes: what
is held at any time is one chunk plus one record, whatever git prints.
"""

from __future__ import annotations

from typing import Protocol

CHUNK = 64 * 1024


class Chunks(Protocol):
    """A binary stream read in chunks (a pipe, ``io.BytesIO``)."""

    def read1(self, size: int = ..., /) -> bytes: ...


class Reader:
    """Records of ``source``, each at most a given size; counts the bytes it consumed."""

    def __init__(self, source: Chunks) -> None:
        """Read ``source`` from its current position."""
        self._source = source
        self._buf = bytearray()
        self._pos = 0  # start of what is not consumed yet
        self._eof = False
        self.consumed = 0  # bytes handed out or skipped

    def _fill(self) -> int | None:
        """Append a chunk to the window: how far what was there moved back (None at the
        end of the stream)."""
        if self._eof:
            return None
        data = self._source.read1(CHUNK)
        if not data:
            self._eof = True
            return None
        moved = self._pos
        del self._buf[: self._pos]
        self._pos = 0
        self._buf += data
        return moved

    def _take(self, end: int, after: int) -> bytes:
        """The bytes from here to ``end``; the next record starts at ``after``."""
        data = bytes(self._buf[self._pos : end])
        self.consumed += after - self._pos
        self._pos = after
        return data

    def record(self, limit: int, sep: bytes = b"\n") -> tuple[bytes, bool] | None:
        """The next record without its ``sep``, and whether it is whole; None at the end.

        A record longer than ``limit`` comes back cut at ``limit`` bytes, with False;
        the rest of it stays unread (:meth:`skip_record` passes it). The last record
        of the stream may lack its ``sep``.
        """
        scan = self._pos
        while True:
            end = self._buf.find(sep, scan, self._pos + limit + 1)
            if end >= 0:
                return self._take(end, end + 1), True
            if len(self._buf) - self._pos > limit:
                return self._take(self._pos + limit, self._pos + limit), False
            scan = len(self._buf)
            moved = self._fill()
            if moved is None:
                if self._pos == len(self._buf):
                    return None
                return self._take(len(self._buf), len(self._buf)), True
            scan -= moved

    def skip_record(self, sep: bytes = b"\n") -> None:
        """Pass the rest of the current record, up to and including ``sep``."""
        while True:
            end = self._buf.find(sep, self._pos)
            if end >= 0:
                self._take(self._pos, end + 1)
                return
            self._take(self._pos, len(self._buf))
            if self._fill() is None:
                return

    def count(self, size: int, byte: int) -> tuple[int, int]:
        """Pass the next ``size`` bytes: how many of them are ``byte``, and the last of
        them (-1 if none). Fewer are passed if the stream ends first."""
        found, last = 0, -1
        while size > 0:
            if self._pos == len(self._buf) and self._fill() is None:
                break
            end = min(len(self._buf), self._pos + size)
            found += self._buf.count(byte, self._pos, end)
            last = self._buf[end - 1]
            size -= end - self._pos
            self._take(self._pos, end)
        return found, last

    def skip_to(self, marker: bytes) -> bool:
        """Pass everything up to the next line that starts with ``marker`` (left unread).

        The reader must be at the start of a line. False at the end of the stream.
        """
        while len(self._buf) - self._pos < len(marker) and self._fill() is not None:
            pass
        if self._buf.startswith(marker, self._pos):
            return True
        needle = b"\n" + marker
        while True:
            found = self._buf.find(needle, self._pos)
            if found >= 0:
                self._take(self._pos, found + 1)
                return True
            # keep what may be the start of a marker that the chunk's end cut
            keep = max(len(self._buf) - len(needle) + 1, self._pos)
            self._take(self._pos, keep)
            if self._fill() is None:
                self._take(self._pos, len(self._buf))
                return False
