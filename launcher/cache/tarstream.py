"""A bounded, forward-only tar reader: ustar, pax and GNU long names, nothing else.

`tarfile` reads a header's whole payload before anything can check its size (a 512 MiB
pax header costs 2 GB of memory) and recurses once per chained extension header. This
reader checks every cap on a header's size field before reading its payload, keeps at
most one bounded extension payload in memory, loops instead of recursing, verifies
header checksums and requires the two zero blocks that end an archive.

Data is handed out as memoryviews of the reader's own large buffer (no copy); a view
is valid until the reader is asked for anything else.

Over 300 lines: one bounded parser whose caps and header state read best in one place.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

__all__ = ["BLOCK", "Caps", "Member", "TarReader", "TarStreamError"]

BLOCK = 512
READ_SIZE = 1 << 20
_GNU_MAGIC = b"ustar  \x00"
_ZERO = bytes(BLOCK)
_OCTAL = frozenset(b"01234567")
# Types that carry `size` bytes of data after the header. POSIX stores none for links,
# devices, directories and FIFOs whatever their size field says (tarfile agrees);
# unknown types are skipped by their size, as GNU tar and tarfile do.
_NO_DATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))
_LONGNAME, _LONGLINK, _PAX, _GLOBAL = b"L", b"K", b"x", b"g"
_EXTENSIONS = frozenset((_LONGNAME, _LONGLINK, _PAX, _GLOBAL))
_PAX_KEYS = ("path", "linkpath", "size")


class TarStreamError(Exception):
    """The stream is not a tar we accept: damaged, truncated, or over a cap.

    `name` is the member the problem belongs to, when there is one.
    """

    def __init__(self, reason: str, name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name


class Caps(NamedTuple):
    """Bounds checked before the payload they bound is read."""

    max_name: int = 4096
    """Bytes of a path or link target (GNU long name/link payload, pax value)."""
    max_depth: int = 1024
    """Components of a member's path."""
    max_pax: int = 64 << 10
    """Bytes of one pax extended (or global) header's payload."""
    max_chain: int = 8
    """Extension headers (pax, GNU long name/link) in front of one member."""
    max_members: int | None = None
    """Members in the archive (extension headers not counted); None: no cap."""
    max_size: int | None = None
    """Bytes of one member's data; None: no cap."""


class Member(NamedTuple):
    """One archive member as its headers describe it."""

    name: str
    """Path as stored (pax `path` or GNU long name applied); directories lose trailing '/'."""
    type: bytes
    """The one-byte typeflag, e.g. b"0" (b"\\0" and b"7" are regular files too)."""
    mode: int
    """Mode bits from the header."""
    size: int
    """The header's size (pax `size` applied). Data of that length follows for regular
    files and unknown types only: never for links, dirs, devices and FIFOs."""
    linkname: str
    """Link target (pax `linkpath` or GNU long link applied), else ""."""


def _text(raw: bytes) -> str:
    # Names are bytes on disk: surrogateescape round-trips non-UTF-8 ones through os.*.
    return raw.decode("utf-8", "surrogateescape")


def _field(raw: bytes) -> bytes:
    """A NUL-terminated header string."""
    end = raw.find(0)
    return raw if end < 0 else raw[:end]


def _number(raw: bytes, what: str) -> int:
    """An octal (or GNU base-256) header number; never negative."""
    if raw[0] == 0x80:
        return int.from_bytes(raw[1:], "big")
    if raw[0] == 0xFF:
        raise TarStreamError(f"negative {what} in a header")
    digits = _field(raw).strip(b" ")
    if not digits:
        return 0
    if not _OCTAL.issuperset(digits):
        raise TarStreamError(f"invalid {what} field in a header")
    return int(digits, 8)


def _checksum_ok(hdr: bytes) -> bool:
    stored = _number(hdr[148:156], "checksum")
    # The checksum field counts as eight spaces; old writers summed signed bytes.
    if 256 + sum(hdr[:148]) + sum(hdr[156:]) == stored:
        return True
    return 256 + sum(struct.unpack_from("148b8x356b", hdr)) == stored


def _parse_pax(data: bytes) -> dict[str, bytes]:
    """Records "<len> <key>=<value>\\n", strictly; later records override earlier ones."""
    out: dict[str, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        space = data.find(b" ", pos, min(end, pos + 20))
        digits = data[pos:space] if space > pos else b""
        if not digits or not digits.isdigit():
            raise TarStreamError("malformed pax record (no length)")
        length = int(digits)
        stop = pos + length
        if stop > end or stop <= space + 1 or data[stop - 1] != 0x0A:
            raise TarStreamError("malformed pax record (bad length)")
        key, eq, value = data[space + 1 : stop - 1].partition(b"=")
        if not eq or not key:
            raise TarStreamError("malformed pax record (no key)")
        out[_text(key)] = value
        pos = stop
    return out


class _Pending:
    """What extension headers said about the next member."""

    __slots__ = ("count", "linkname", "name", "size")

    def __init__(self) -> None:
        self.count = 0
        self.name: str | None = None
        self.linkname: str | None = None
        self.size: int | None = None

    def set(self, attr: str, value: object) -> None:
        # Two names for one member: tar implementations disagree on which wins, so
        # neither does.
        if getattr(self, attr) is not None:
            raise TarStreamError(f"two extension headers set the {attr} of one member")
        setattr(self, attr, value)


class TarReader:
    """Iterate over members of an uncompressed tar stream, strictly forward.

    `source` is any object with `readinto` (preferred: no allocation per read) or `read`,
    or a callable returning the next chunk (b"" at the end). Iterating yields Members;
    `data()` yields the current member's bytes, and whatever is not read is skipped.
    TarStreamError is raised for anything malformed; OSErrors and the source's own
    exceptions propagate unchanged.
    """

    def __init__(
        self,
        source: object,
        caps: Caps | None = None,
        read_size: int = READ_SIZE,
    ) -> None:
        self.caps = caps or Caps()
        self._pull = self._make_pull(source, read_size)
        self._view = memoryview(b"")
        self._pos = 0
        self._remaining = 0  # data bytes of the current member not handed out yet
        self._padding = 0  # zero fill after the current member's data
        self._members = 0
        self._current: str | None = None
        self.ended = False
        """True once the end-of-archive marker was read."""

    @staticmethod
    def _make_pull(source: object, read_size: int) -> Callable[[], memoryview]:
        readinto = getattr(source, "readinto", None)
        if readinto is not None:
            buf = memoryview(bytearray(read_size))

            def pull() -> memoryview:
                return buf[: readinto(buf) or 0]

            return pull
        read = getattr(source, "read", None) or source
        if not callable(read):
            raise TypeError("source must have readinto() or read(), or be callable")

        def pull_bytes() -> memoryview:
            return memoryview(read(read_size) if read is not source else read())

        return pull_bytes

    # --- low-level reading ----------------------------------------------------------

    def _fill(self) -> bool:
        """Replace the exhausted buffer with the next chunk; False at end of stream."""
        self._view = self._pull()
        self._pos = 0
        return len(self._view) > 0

    def _take(self, n: int, what: str) -> bytes:
        """Exactly n bytes (n is bounded by the caller), or TarStreamError."""
        avail = len(self._view) - self._pos
        if avail >= n:
            start = self._pos
            self._pos += n
            return bytes(self._view[start : self._pos])
        parts = bytearray(self._view[self._pos :])
        self._pos = len(self._view)
        while len(parts) < n:
            if not self._fill():
                raise self._truncated(what, at_boundary=not parts and what == "header")
            need = min(n - len(parts), len(self._view))
            parts += self._view[:need]
            self._pos = need
        return bytes(parts)

    def _skip(self, n: int) -> None:
        while n:
            avail = len(self._view) - self._pos
            if not avail:
                if not self._fill():
                    raise self._truncated("member data")
                continue
            step = min(avail, n)
            self._pos += step
            n -= step

    def _truncated(self, what: str, *, at_boundary: bool = False) -> TarStreamError:
        if at_boundary:
            return TarStreamError("the tar stream ends early (no end-of-archive marker)")
        if self._current is None:
            return TarStreamError(f"the tar stream ends early (inside the {what})")
        relation = "of" if what == "member data" else "after the member"
        return TarStreamError(
            f"the tar stream ends early (inside the {what} {relation} {self._current!r})"
        )

    # --- members ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Member]:
        while True:
            member = self.next()
            if member is None:
                return
            yield member

    def data(self) -> Iterator[memoryview]:
        """The current member's data in pieces (each valid until the next step)."""
        while self._remaining:
            avail = len(self._view) - self._pos
            if not avail:
                if not self._fill():
                    raise self._truncated("member data")
                continue
            step = min(avail, self._remaining)
            start = self._pos
            self._pos += step
            self._remaining -= step
            yield self._view[start : self._pos]

    def next(self) -> Member | None:
        """The next member, or None after the end-of-archive marker."""
        if self.ended:
            return None
        self._skip(self._remaining + self._padding)
        self._remaining = self._padding = 0
        pending = _Pending()
        caps = self.caps
        while True:
            hdr = self._take(BLOCK, "header")
            if hdr == _ZERO:
                return self._end(pending)
            if not _checksum_ok(hdr):
                raise TarStreamError("bad header checksum")
            kind = hdr[156:157]
            size = _number(hdr[124:136], "size")
            if kind not in _EXTENSIONS:
                return self._member(hdr, kind, size, pending)
            pending.count += 1
            if pending.count > caps.max_chain:
                raise TarStreamError(
                    f"more than {caps.max_chain} extension headers in front of one member"
                )
            if kind in (_LONGNAME, _LONGLINK):
                # The payload is the name and its NUL.
                if size > caps.max_name + 1:
                    what = "long name" if kind == _LONGNAME else "long link target"
                    raise TarStreamError(f"{what} of {size} bytes over the cap of {caps.max_name}")
                raw = _field(self._read_payload(size, "long name"))
                pending.set("name" if kind == _LONGNAME else "linkname", _text(raw))
            else:
                if size > caps.max_pax:
                    raise TarStreamError(
                        f"pax header of {size} bytes over the cap of {caps.max_pax}"
                    )
                records = _parse_pax(self._read_payload(size, "pax header"))
                self._apply_pax(records, pending, kind == _GLOBAL)

    def _read_payload(self, size: int, what: str) -> bytes:
        data = self._take(size, what)
        self._skip(-size % BLOCK)
        return data

    def _apply_pax(self, records: dict[str, bytes], pending: _Pending, is_global: bool) -> None:
        caps = self.caps
        for key in records:
            if key.startswith("GNU.sparse."):
                raise TarStreamError("sparse files are not supported")
        if is_global:
            # A global path or size would apply to every later member: never in a rootfs.
            for key in _PAX_KEYS:
                if key in records:
                    raise TarStreamError(f"global pax header sets {key!r}")
            return
        for key in ("path", "linkpath"):
            value = records.get(key)
            if value is not None:
                if len(value) > caps.max_name:
                    raise TarStreamError(
                        f"pax {key} of {len(value)} bytes over the cap of {caps.max_name}"
                    )
                pending.set("name" if key == "path" else "linkname", _text(value))
        size = records.get("size")
        if size is not None:
            if not size.isdigit() or len(size) > 20:
                raise TarStreamError("invalid pax size")
            pending.set("size", int(size))

    def _member(self, hdr: bytes, kind: bytes, size: int, pending: _Pending) -> Member:
        caps = self.caps
        raw_name = _field(hdr[0:100])
        if hdr[257:263] == b"ustar\x00":  # POSIX ustar: a prefix field (GNU puts times there)
            prefix = _field(hdr[345:500])
            if prefix:
                raw_name = prefix + b"/" + raw_name
        elif hdr[257:265] == _GNU_MAGIC and kind != b"S" and any(hdr[345:500]):
            # GNU keeps times and sparse data there, tarfile reads a ustar prefix: two
            # readers, two names for one member. The build writes pax; refuse the doubt.
            raise TarStreamError(
                "a GNU header with bytes where ustar keeps a name prefix (tar readers"
                " disagree on its name)",
                _text(raw_name),
            )
        name = pending.name if pending.name is not None else _text(raw_name)
        if kind == b"\x00" and name.endswith("/"):
            kind = b"5"  # the V7 spelling of a directory
        if kind == b"5":
            name = name.rstrip("/")
        linkname = pending.linkname
        if linkname is None:
            linkname = _text(_field(hdr[157:257]))
        if pending.size is not None:
            size = pending.size
        self._current = name
        if name.count("/") >= caps.max_depth:
            raise TarStreamError(f"path deeper than {caps.max_depth} components", name)
        self._members += 1
        if caps.max_members is not None and self._members > caps.max_members:
            raise TarStreamError(f"more than {caps.max_members} members", name)
        if caps.max_size is not None and size > caps.max_size:
            raise TarStreamError(f"size {size} over the cap of {caps.max_size}", name)
        if kind in _NO_DATA:
            self._remaining = self._padding = 0
        else:
            self._remaining, self._padding = size, -size % BLOCK
        mode = _number(hdr[100:108], "mode")
        return Member(name, kind, mode, size, linkname)

    def _end(self, pending: _Pending) -> None:
        if pending.count:
            raise TarStreamError("extension header without a member after it")
        second = self._take(BLOCK, "end-of-archive marker")
        if second != _ZERO:
            raise TarStreamError("a lone zero block inside the archive")
        self.ended = True
        self._view = memoryview(b"")
        self._pos = 0
        return None
