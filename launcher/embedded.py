"""The bundle embedded in this single file: its manifest and its payload stream.

The manifest comes from `launcher/_embedded.py`, a Python literal written by
build.py, so the warm path learns the digest without zipfile or json.
"""

from __future__ import annotations

import os
import sys

from launcher.errors import PayloadCorrupt

PAYLOAD_MEMBER = "bundle/rootfs.tar.zst"
TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from typing import IO, Any

    from launcher.manifest import Manifest

REBUILD = "download auto-review again (or rebuild it with: python3 build.py)"


def archive_path() -> str:
    """Path of the single file (the zipapp) this launcher runs from.

    Not this module's own loader: the launcher's modules may come from its code cache,
    itself a zip. The zipapp's __main__ was always loaded from the single file.
    """
    main = sys.modules.get("__main__")
    archive = getattr(getattr(main, "__loader__", None), "archive", None)
    if archive:
        return archive
    return os.path.abspath(sys.argv[0])


def manifest() -> Manifest:
    """The embedded bundle's manifest, checked against the contract (launcher.manifest)."""
    try:
        from launcher._embedded import MANIFEST
    except ImportError:
        raise PayloadCorrupt(
            "this launcher has no embedded bundle (running from a source tree?)", REBUILD
        ) from None
    from launcher.manifest import validate

    return validate(MANIFEST)


_archive: list[Any] = []  # the single file, opened once per process (cold path only)


def _zip() -> Any:
    """The single file as a ZipFile, its central directory read once."""
    import zipfile

    if not _archive:
        try:
            _archive.append(zipfile.ZipFile(archive_path()))
        except (OSError, zipfile.BadZipFile, NotImplementedError, ValueError) as exc:
            # ValueError: UnicodeDecodeError, of a damaged name in the directory
            raise PayloadCorrupt(f"cannot read the single file: {exc}", REBUILD) from None
    return _archive[0]


def _only_info(name: str) -> Any:
    """The ZipInfo of member `name`, None when there is none; PayloadCorrupt when the
    directory names it twice (zipfile reads the last, a check would look at the first)."""
    infos = [info for info in _zip().infolist() if info.filename == name]
    if len(infos) > 1:
        raise PayloadCorrupt(f"the single file has {len(infos)} members named {name}", REBUILD)
    return infos[0] if infos else None


def _stored_info(name: str, what: str) -> Any:
    """The ZipInfo of member `name`, which must be there once and stored (its size in
    the directory the size of its data): zipfile inflates up to 2 GiB in one call
    whatever the directory says, so no member whose size is capped is read through it."""
    import zipfile

    info = _only_info(name)
    if info is None:
        raise PayloadCorrupt(f"cannot read {what}: the single file has no {name}", REBUILD)
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise PayloadCorrupt(f"{what} is not stored uncompressed", REBUILD)
    return info


def open_payload() -> IO[bytes]:
    """A forward-only stream of the stored rootfs.tar.zst, straight from the zip file."""
    return _zip().open(_stored_info(PAYLOAD_MEMBER, "the embedded payload"))


def payload_span(size: int) -> tuple[int, int, int]:
    """(fd, offset, size) of the stored rootfs.tar.zst inside the single file, which the
    manifest says is `size` bytes: read it with os.pread, without zipfile's CRC-32 pass
    over 15 MB (the manifest's sha256 covers the same bytes). The caller closes the fd.

    The build writes the payload as the zip's first member, so its local header follows
    the shebang: found there, zipfile is not imported before decoding starts. A file
    laid out otherwise (another zip tool rewrote it) is read through its directory."""
    try:
        fd = os.open(archive_path(), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PayloadCorrupt(f"cannot read the single file: {exc}", REBUILD) from None
    try:
        start = _first_member_start(fd, size)
    except OSError as exc:
        os.close(fd)
        raise PayloadCorrupt(f"cannot read the single file: {exc}", REBUILD) from None
    except BaseException:  # its own PayloadCorrupt: the file ends inside the payload
        os.close(fd)
        raise
    if start is not None:
        return fd, start, size
    os.close(fd)
    return _span_from_directory(PAYLOAD_MEMBER, "the embedded payload", "its payload")


def _first_member_start(fd: int, size: int) -> int | None:
    """Where the payload's bytes start when it is the zip's first member, stored, of
    `size` bytes; None otherwise."""
    head = os.pread(fd, 4096, 0)
    at = head.find(b"PK\x03\x04")
    found = _stored_member(fd, at, PAYLOAD_MEMBER) if at >= 0 else None
    if found is None or found[1] != size:
        return None
    if found[0] + size > os.fstat(fd).st_size:
        raise PayloadCorrupt("the single file ends inside its payload", REBUILD)
    return found[0]


def _stored_member(fd: int, at: int, name: str) -> tuple[int, int] | None:
    """(start, size) of the data of member `name` when its local header is at `at`,
    stored, with its sizes in the header; None when anything else is there. Local
    header fields: APPNOTE 4.3.7."""
    import struct

    head = os.pread(fd, 30 + len(name), at)
    if len(head) < 30 + len(name) or head[:4] != b"PK\x03\x04":
        return None
    flags, method = struct.unpack_from("<HH", head, 6)
    csize, usize, name_len, extra_len = struct.unpack_from("<IIHH", head, 18)
    if head[30:] != name.encode() or name_len != len(name) or method != 0 or flags & 0x09:
        return None  # another member, compressed, encrypted or with a data descriptor
    if csize != usize or csize == 0xFFFFFFFF:  # zip64: the sizes are in the extra field
        return None
    return at + 30 + name_len + extra_len, csize


def read_listed_member(name: str, payload_size: int, cap: int) -> bytes:
    """Bytes of member `name`, which the build stores right after the payload (of
    `payload_size` bytes): read with one pread past it, so a cold start never imports
    zipfile (and the pathlib, shutil and urllib it imports: about 9 ms of the main
    thread before its writer could begin). A file laid out otherwise is read through
    its directory. PayloadCorrupt when there is none, or over `cap` bytes (before any
    is read)."""
    fd, start, size = payload_span(payload_size)
    try:
        found = _stored_member(fd, start + size, name)
    except OSError as exc:
        os.close(fd)
        raise PayloadCorrupt(f"cannot read the single file: {exc}", REBUILD) from None
    if found is None:
        os.close(fd)
        fd, *found = _span_from_directory(name, name, name)
    try:
        at, length = found
        if length > cap:
            raise PayloadCorrupt(f"{name} of {length} bytes is over the cap of {cap}", REBUILD)
        data = os.pread(fd, length, at)
    except OSError as exc:
        raise PayloadCorrupt(f"cannot read the single file: {exc}", REBUILD) from None
    finally:
        os.close(fd)
    if len(data) != length:
        raise PayloadCorrupt(f"the single file ends inside {name}", REBUILD)
    return data


def _span_from_directory(name: str, what: str, inside: str) -> tuple[int, int, int]:
    """(fd, offset, size) of the stored member `name` through zipfile: the central
    directory names its local header and its size; zipfile reads none of its data."""
    import struct

    info = _stored_info(name, what)
    fd = os.dup(_zip().fp.fileno())  # the file whose directory was read, not a path again
    try:
        # the local header: signature, ..., name length and extra length (APPNOTE 4.3.7)
        header = os.pread(fd, 30, info.header_offset)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise PayloadCorrupt(f"{what}'s zip header is damaged", REBUILD)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.compress_size > os.fstat(fd).st_size:
            raise PayloadCorrupt(f"the single file ends inside {inside}", REBUILD)
    except BaseException:
        os.close(fd)
        raise
    return fd, start, info.compress_size


def read_member(name: str, cap: int) -> bytes:
    """Bytes of one member of the zipapp (KeyError when there is none), refused over `cap`
    bytes: the size the directory declares first, then what inflates. zipfile's read()
    inflates up to 2 GiB in one call whatever the directory says; a bounded read() of a
    stored or deflated member holds at most about twice `cap` (zipfile bounds neither
    bzip2's nor LZMA's output, which the build never writes)."""
    import zipfile
    import zlib

    info = _only_info(name)
    if info is None:
        raise KeyError(name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise PayloadCorrupt(f"{name} is compressed in a way the build never writes", REBUILD)
    if info.file_size <= cap:
        try:
            with _zip().open(info) as member:
                data = member.read(cap + 1)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, zlib.error) as exc:
            raise PayloadCorrupt(f"cannot read {name}: {exc}", REBUILD) from None
        if len(data) <= cap:
            return data
    raise PayloadCorrupt(f"{name} is over the cap of {cap} bytes", REBUILD)


def list_members(prefix: str) -> list[tuple[str, int, int]]:
    """(name, size, crc) of the zipapp's members under `prefix`."""
    return [
        (i.filename, i.file_size, i.CRC) for i in _zip().infolist() if i.filename.startswith(prefix)
    ]
