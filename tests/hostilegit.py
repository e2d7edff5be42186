"""A git server on loopback that answers a fetch with a hostile pack.

:class:`HostileGitServer` is the TLS smart-HTTP server of tests/gitserver.py (the real
``git http-backend`` advertises the refs and negotiates, protocol v0 or v2, shallow or
not), except that in its answer to a fetch the pack upload-pack sends is replaced by
the one :attr:`HostileGitServer.pack` makes: the relay reads the answer's pkt-lines and,
at the first side-band packet that starts a pack (``\\x01PACK``), sends the hostile
pack instead, in side-band packets of its own.

Packs (version 2, blobs stored with zlib as git does):

* :func:`endless_pack`: a header announcing ``claimed`` objects, then small distinct
  blobs without end (a 100-million-object header is the issue's "pack that never ends");
* :func:`stalled_pack`: a header, a few blobs, then nothing until the server stops: a
  pack that stops only when the client gives up;
* :func:`large_pack`: a header, then incompressible 64 KiB blobs without end, so the
  pack's bytes grow as fast as the link allows.

The server stops sending when the client hangs up (or at :meth:`stop`).

And repositories whose content is the attack, written by ``git fast-import`` from a
generator (never held in memory): :func:`hostile_repo`, with :func:`text_of` (a big
text blob) and :func:`newlines` (a newline bomb: 64 MiB of ``\n`` is a 64 KiB pack).
"""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from gitserver import AUTHOR_EMAIL, AUTHOR_NAME, BASE_EPOCH, GitHttpsServer, _Handler, git_env

_OBJ_BLOB = 3
_PACKET = 32 * 1024  # side-band payload per pkt-line (git's limit is 65515)


def _object(data: bytes, level: int = 1) -> bytes:
    """One blob entry of a pack: the type-and-size header, then the zlib stream."""
    size = len(data)
    byte = (_OBJ_BLOB << 4) | (size & 0x0F)
    size >>= 4
    header = bytearray()
    while size:
        header.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    header.append(byte)
    return bytes(header) + zlib.compress(data, level)


def _header(claimed: int) -> bytes:
    return b"PACK" + struct.pack(">II", 2, claimed)


def endless_pack(claimed: int = 100_000_000) -> Callable[[threading.Event], Iterator[bytes]]:
    """A pack that announces ``claimed`` objects and sends tiny blobs until stopped."""

    def pack(stop: threading.Event) -> Iterator[bytes]:
        yield _header(claimed)
        for i in itertools.count():
            if stop.is_set():
                return
            yield _object(b"%d\n" % i)

    return pack


def stalled_pack(claimed: int, sent: int = 1000) -> Callable[[threading.Event], Iterator[bytes]]:
    """A pack that announces ``claimed`` objects, sends ``sent`` tiny blobs, then waits
    for the server to stop (the connection stays open, quiet)."""

    def pack(stop: threading.Event) -> Iterator[bytes]:
        yield _header(claimed) + b"".join(_object(b"%d\n" % i) for i in range(sent))
        yield b""  # flushed: the client has all of it
        stop.wait()

    return pack


def large_pack(claimed: int = 1_000_000) -> Callable[[threading.Event], Iterator[bytes]]:
    """A pack of incompressible 64 KiB blobs, without end."""

    def pack(stop: threading.Event) -> Iterator[bytes]:
        yield _header(claimed)
        while not stop.is_set():
            yield _object(os.urandom(64 * 1024), level=0)

    return pack


class _Rewritten:
    """A CGI answer whose pack is replaced: ``readline`` passes the CGI headers through,
    ``read1`` gives the body, pkt-line by pkt-line, with the hostile pack in place."""

    def __init__(self, out: IO[bytes], pack: Iterator[bytes]) -> None:
        self._out, self._pack = out, pack
        self._body = self._packets()
        self._pending = b""

    def readline(self, limit: int = -1) -> bytes:
        return self._out.readline(limit)

    def read1(self, size: int = -1) -> bytes:
        while not self._pending:
            try:
                self._pending = next(self._body)
            except StopIteration:
                return b""
        cut = len(self._pending) if size < 0 else size
        data, self._pending = self._pending[:cut], self._pending[cut:]
        return data

    read = read1

    def _packets(self) -> Iterator[bytes]:
        while len(head := self._out.read(4)) == 4:
            size = int(head, 16)
            if size < 4:  # flush, delimiter, response end
                yield head
                continue
            payload = self._out.read(size - 4)
            if payload.startswith(b"\x01PACK"):
                yield from self._hostile()
                return
            yield head + payload
        yield head

    def _hostile(self) -> Iterator[bytes]:
        buffered = bytearray()
        for part in self._pack:
            buffered += part
            while len(buffered) >= _PACKET or (not part and buffered):
                data = bytes(buffered[:_PACKET])
                del buffered[:_PACKET]
                yield b"%04x\x01" % (len(data) + 5) + data


class _HostileHandler(_Handler):
    """gitserver's handler, with the answers to ``git-upload-pack`` rewritten."""

    server: Any

    def _relay(self, out: IO[bytes], record: Any) -> None:
        owner = self.server.owner
        if self.command == "POST" and "git-upload-pack" in record.path and owner.pack:
            out = _Rewritten(out, owner.pack(owner.stopping))  # type: ignore[assignment]
        super()._relay(out, record)
        self.wfile.flush()


class HostileGitServer(GitHttpsServer):
    """GitHttpsServer whose fetch answers carry the pack ``pack(stop_event)`` yields.

    An empty ``bytes`` part from the generator means "flush what you have"."""

    handler_class = _HostileHandler

    def __init__(self, *args: Any, pack: Callable[[threading.Event], Iterator[bytes]],
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.pack = pack
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        super().stop()


# --------------------------------------------------------------------------- repositories

Content = tuple[int, Iterable[bytes]]  # a blob's size and its bytes, in parts


def text_of(size: int) -> Content:
    """``size`` bytes of ordinary numbered text lines."""
    block = b"".join(b"line %09d of a big generated text file, mostly harmless\n" % i
                     for i in range(16384))  # fmt: skip

    def parts() -> Iterator[bytes]:
        left = size
        while left:
            yield block[: min(left, len(block))]
            left -= min(left, len(block))

    return size, parts()


def newlines(size: int) -> Content:
    """``size`` bytes of ``\n``: as many lines as bytes."""
    block = b"\n" * (1 << 20)
    return size, (block[: min(size - i, len(block))] for i in range(0, size, len(block)))


def hostile_repo(path: Path, head: Mapping[str, Content | bytes]) -> None:
    """A bare repository: ``main`` with a README, ``topic`` off it adding ``head``'s files
    (streamed into ``git fast-import``, so a blob of any size costs no memory here)."""
    env = git_env()
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(path)],
                   check=True, env=env)  # fmt: skip
    proc = subprocess.Popen(["git", "--git-dir", str(path), "fast-import", "--quiet", "--done"],
                            stdin=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stdin is not None
    ident = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {BASE_EPOCH} +0000".encode()
    for branch, files, parent in (("main", {"README.md": b"hi\n"}, b""),
                                  ("topic", head, b"from refs/heads/main\n")):  # fmt: skip
        proc.stdin.write(b"commit refs/heads/%s\nauthor %s\ncommitter %s\ndata 7\n%-6s\n%s"
                         % (branch.encode(), ident, ident, branch.encode(), parent))  # fmt: skip
        for name, content in files.items():
            size, parts = (len(content), [content]) if isinstance(content, bytes) else content
            proc.stdin.write(b"M 100644 inline %s\ndata %d\n" % (name.encode(), size))
            for part in parts:
                proc.stdin.write(part)
            proc.stdin.write(b"\n")
    proc.stdin.write(b"done\n")
    proc.stdin.close()
    assert proc.wait() == 0
