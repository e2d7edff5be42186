"""Safe streaming extraction of the rootfs tarball.

The payload is data, never trusted blindly. `tarstream` only parses headers (bounded,
strictly forward); every entry is created by this module relative to directory file
descriptors that were opened with O_NOFOLLOW, so no member can be written through a
symlink or outside the destination. Symlink targets are written verbatim (they resolve
inside the container) and created after everything else. The extractor never deletes
anything: on error the caller throws the whole work directory away.

Over 300 lines: one extractor; each member check sits beside the fd-relative call it guards.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from launcher.cache.tarstream import Caps, Member, TarReader, TarStreamError
from launcher.errors import PayloadCorrupt

__all__ = [
    "RESERVED_NAMES",
    "Entry",
    "ExtractResult",
    "Limits",
    "extract_tar_stream",
]

RESERVED_NAMES = frozenset({".complete"})
"""Top-level names a member may not have (the cache owns them)."""

_FIX = "the file is damaged or was tampered with: download auto-review again"
_MAX_CACHED_FDS = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# OSErrors that a hostile or broken member can cause while its entry is created; they are
# reported as a corrupt payload. Everything else (ENOSPC, EIO, EDQUOT, ...) propagates.
_NAME_ERRNOS = frozenset(
    {errno.EEXIST, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
)
_CONTROL = frozenset(map(chr, [*range(0x20), 0x7F]))
_FILE_TYPES = frozenset((b"0", b"\x00", b"7"))  # regular, old regular, contiguous
_KINDS = {b"5": "dir", b"2": "symlink", b"1": "hardlink"}


class Limits(NamedTuple):
    """Caps that bound what a payload may make us write."""

    max_members: int
    """Member count cap (the archive's root member "." is not counted)."""
    max_file_size: int
    """Per member header size, bytes."""
    max_total_size: int
    """Sum of regular file sizes, bytes."""


class Entry(NamedTuple):
    """One extracted member, as created on disk."""

    path: str
    """Normalized relative path, e.g. "usr/bin/git"."""
    kind: str
    """"file", "dir", "symlink" or "hardlink"."""
    mode: int
    """Final permission bits as applied (0 for symlinks)."""
    size: int
    """Bytes for files and hardlinks (size of the target), else 0."""
    digest: str
    """sha256 hex of the content (files, hardlinks; "" when not hashed), the link target
    (symlinks), "" (dirs)."""
    link: str = ""
    """Hardlinks: normalized path of the target member; else ""."""


class ExtractResult(NamedTuple):
    """What an extraction produced."""

    members: int
    """Number of members extracted (len(entries))."""
    total_size: int
    """Regular file bytes written."""
    entries: list[Entry]
    """One entry per member, in archive order."""


def dir_mode(mode: int) -> int:
    """A directory's mode in the cache: owner rwx, no setgid; world-write only with the
    sticky bit (/tmp: runc gives its tmpfs the mount point's mode)."""
    if mode & 0o1000:
        return (mode & 0o1777) | 0o700
    return (mode & 0o755) | 0o700


def _show(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 200 else text[:197] + "..."


def _refuse(name: str, reason: str) -> PayloadCorrupt:
    return PayloadCorrupt(f"unsafe member {_show(name)} in payload: {reason}", _FIX)


def _damaged(reason: str) -> PayloadCorrupt:
    return PayloadCorrupt(f"damaged payload: {reason}".replace("\n", " "), _FIX)


def _has_control(text: str) -> bool:
    """Tabs, newlines, escapes...: never in a rootfs, and they would forge lines in files.tsv."""
    return not _CONTROL.isdisjoint(text)


def _normalize(raw: str, *, is_dir: bool, what: str = "") -> str | None:
    """Return the normalized relative path of a member name, None for the root itself."""
    shown = what or raw
    if "\x00" in raw:
        raise _refuse(shown, "NUL byte in name")
    if _has_control(raw):
        raise _refuse(shown, "control character in name")
    if raw in (".", "./"):
        return None
    if not raw:
        raise _refuse(shown, "empty name")
    if raw.startswith("/"):
        raise _refuse(shown, "absolute path")
    name = raw[2:] if raw.startswith("./") else raw
    if is_dir and name.endswith("/"):
        name = name[:-1]
    for part in name.split("/"):
        if part == "..":
            raise _refuse(shown, "path escapes the root")
        if part in ("", "."):
            raise _refuse(shown, "empty or '.' path component")
    return name


def _parents(path: str) -> list[str]:
    """Proper ancestors of a relative path, shallowest first ("a/b/c" -> ["a", "a/b"])."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


class _Extractor:
    """State of one extraction: what exists, open directory fds, pending work."""

    def __init__(
        self,
        root_fd: int,
        limits: Limits,
        progress: Callable[[int], None] | None,
        hash_files: bool,
        written: Callable[[int, int], None] | None = None,
    ):
        self.root_fd = root_fd
        self.limits = limits
        self.progress = progress
        self.hash_files = hash_files
        self.written = written
        self.fds: dict[str, int] = {}
        # Every path that exists or will exist under dest, implicit parents included.
        self.kinds: dict[str, str] = {}
        self.members: set[str] = set()
        self.dir_modes: dict[str, int] = {}
        # Regular files and hardlinks: path -> (mode, size, digest) for hardlink targets.
        self.files: dict[str, tuple[int, int, str]] = {}
        self.symlinks: list[tuple[str, str]] = []
        self.entries: list[Entry] = []
        self.total = 0
        self.seen_root = False

    def close(self) -> None:
        """Close every cached directory fd (not the root)."""
        fds, self.fds = self.fds, {}
        for fd in fds.values():
            os.close(fd)

    def dir_fd(self, path: str) -> int:
        """An fd for directory `path`, creating it and its missing parents (mode 0o700).

        The walk starts at the deepest cached ancestor and opens every component with
        O_NOFOLLOW, so it can never leave the tree. Only the final fd is cached.
        """
        if not path:
            return self.root_fd
        cached = self.fds.get(path)
        if cached is not None:
            return cached
        parts = path.split("/")
        start, fd = 0, self.root_fd
        for depth in range(len(parts) - 1, 0, -1):
            cached = self.fds.get("/".join(parts[:depth]))
            if cached is not None:
                start, fd = depth, cached
                break
        owned = False  # whether `fd` is an intermediate fd this walk must close
        try:
            for depth in range(start, len(parts)):
                prefix = "/".join(parts[: depth + 1])
                created = prefix not in self.kinds
                if created:
                    os.mkdir(parts[depth], 0o700, dir_fd=fd)
                    self.kinds[prefix] = "dir"
                    self.dir_modes[prefix] = 0o755
                child = os.open(parts[depth], _DIR_FLAGS, dir_fd=fd)
                if owned:
                    os.close(fd)
                fd, owned = child, True
                if created:
                    # mkdir's mode went through the umask; the owner must be able to fill it.
                    os.fchmod(fd, 0o700)
        except BaseException:
            if owned:
                os.close(fd)
            raise
        self.fds[path] = fd
        return fd

    def check_place(self, raw: str, path: str, kind: str) -> None:
        """Refuse a member that collides with or goes through an earlier one."""
        if path in self.members:
            raise _refuse(raw, "duplicate member")
        if path.split("/", 1)[0] in RESERVED_NAMES:
            raise _refuse(raw, "reserved name")
        for prefix in _parents(path):
            existing = self.kinds.get(prefix)
            if existing == "symlink":
                raise _refuse(raw, f"path goes through the symlink {prefix!r}")
            if existing is not None and existing != "dir":
                raise _refuse(raw, f"parent {prefix!r} is not a directory")
        existing = self.kinds.get(path)
        if existing is not None and not (kind == "dir" and existing == "dir"):
            raise _refuse(raw, f"conflicts with an earlier {existing} at the same path")

    def add(self, reader: TarReader, member: Member) -> None:
        """Check one member and create it (symlinks are only recorded)."""
        raw = member.name
        if member.type in (b"3", b"4"):
            raise _refuse(raw, "device node")
        if member.type == b"6":
            raise _refuse(raw, "FIFO")
        kind = "file" if member.type in _FILE_TYPES else _KINDS.get(member.type)
        if kind is None:
            raise _refuse(raw, f"unsupported member type {member.type!r}")

        path = _normalize(raw, is_dir=kind == "dir")
        if path is None:
            if kind != "dir":
                raise _refuse(raw, "the root must be a directory")
            if self.seen_root:
                raise _refuse(raw, "duplicate member")
            self.seen_root = True
            return
        if len(self.entries) >= self.limits.max_members:
            raise _refuse(raw, f"more than {self.limits.max_members} members")
        if member.size > self.limits.max_file_size:
            raise _refuse(raw, f"size {member.size} over the cap of {self.limits.max_file_size}")
        self.check_place(raw, path, kind)

        try:
            if kind == "file":
                entry = self.add_file(reader, member, path)
            elif kind == "dir":
                self.dir_fd(path)
                mode = dir_mode(member.mode)
                self.dir_modes[path] = mode
                entry = Entry(path, "dir", mode, 0, "")
            elif kind == "symlink":
                entry = self.add_symlink(member, path)
            else:
                entry = self.add_hardlink(member, path)
        except OSError as exc:
            if exc.errno in _NAME_ERRNOS:
                raise _refuse(raw, f"cannot be created ({os.strerror(exc.errno)})") from exc
            raise
        self.members.add(path)
        self.entries.append(entry)

    def add_file(self, reader: TarReader, member: Member, path: str) -> Entry:
        if self.total + member.size > self.limits.max_total_size:
            raise _refuse(member.name, f"total size over the cap of {self.limits.max_total_size}")
        parent, name = _split(path)
        parent_fd = self.dir_fd(parent)
        digest = hashlib.sha256() if self.hash_files else None
        progress = self.progress
        mode = (member.mode & 0o755) | 0o400
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent_fd)
        self.kinds[path] = "file"
        try:
            # The reader hands out exactly member.size bytes, or raises on a short stream.
            for view in reader.data():
                if digest is not None:
                    digest.update(view)
                n = len(view)
                offset = os.write(fd, view)
                while offset < n:
                    offset += os.write(fd, view[offset:])
                if progress is not None:
                    progress(n)
            if self.written is not None:
                self.written(fd, member.size)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        self.total += member.size
        hexdigest = digest.hexdigest() if digest is not None else ""
        self.files[path] = (mode, member.size, hexdigest)
        return Entry(path, "file", mode, member.size, hexdigest)

    def add_symlink(self, member: Member, path: str) -> Entry:
        target = member.linkname
        if "\x00" in target:
            raise _refuse(member.name, "NUL byte in symlink target")
        if _has_control(target):
            raise _refuse(member.name, "control character in symlink target")
        if not target:
            raise _refuse(member.name, "empty symlink target")
        self.dir_fd(_split(path)[0])
        self.kinds[path] = "symlink"
        self.symlinks.append((path, target))
        return Entry(path, "symlink", 0, 0, target)

    def add_hardlink(self, member: Member, path: str) -> Entry:
        what = f"{member.name} -> {member.linkname}"
        target = _normalize(member.linkname, is_dir=False, what=what)
        if target is None:
            raise _refuse(what, "hardlink target is the root directory")
        info = self.files.get(target)
        if info is None:
            existing = self.kinds.get(target)
            reason = f"a {existing}" if existing else "not an earlier regular file"
            raise _refuse(what, f"hardlink target is {reason}")
        mode, size, digest = info
        parent, name = _split(path)
        target_parent, target_name = _split(target)
        target_fd = self.dir_fd(target_parent)
        os.link(
            target_name,
            name,
            src_dir_fd=target_fd,
            dst_dir_fd=self.dir_fd(parent),
            follow_symlinks=False,
        )
        self.kinds[path] = "hardlink"
        self.files[path] = info
        return Entry(path, "hardlink", mode, size, digest, link=target)

    def finish(self) -> None:
        """Create the symlinks, then apply directory modes deepest first."""
        for path, target in self.symlinks:
            parent, name = _split(path)
            try:
                os.symlink(target, name, dir_fd=self.dir_fd(parent))
            except OSError as exc:
                if exc.errno in _NAME_ERRNOS:
                    raise _refuse(path, f"cannot be created ({os.strerror(exc.errno)})") from exc
                raise
            self.trim()
        for path in sorted(self.dir_modes, key=lambda p: p.count("/"), reverse=True):
            os.fchmod(self.dir_fd(path), self.dir_modes[path])
            self.trim()

    def trim(self) -> None:
        """Bound the directory fd cache; only called between members."""
        if len(self.fds) > _MAX_CACHED_FDS:
            self.close()


def extract_tar_stream(
    stream: BinaryIO | Callable[[], bytes],
    dest: str,
    limits: Limits,
    *,
    progress: Callable[[int], None] | None = None,
    hash_files: bool = True,
    written: Callable[[int, int], None] | None = None,
) -> ExtractResult:
    """Extract an uncompressed tar stream into the empty directory `dest`.

    The stream is read strictly forward (`readinto`/`read`, or a callable returning
    chunks, see TarReader). Every refused member raises PayloadCorrupt naming it; OSErrors
    such as ENOSPC and the stream's own exceptions propagate unchanged. Whatever was
    written before an error stays in `dest` for the caller to delete. `progress`, if
    given, is called with the number of file bytes just written. With `hash_files` false,
    files and hardlinks get an empty digest (the caller has them from elsewhere).
    `written`, if given, is called with the fd and size of each file just filled.
    """
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    extractor = _Extractor(root_fd, limits, progress, hash_files, written)
    reader = TarReader(stream, Caps())
    member = None
    try:
        if os.listdir(root_fd):
            raise ValueError(f"extraction target {dest!r} is not empty")
        try:
            for member in reader:
                extractor.trim()
                extractor.add(reader, member)
        except TarStreamError as exc:
            if exc.name is not None:
                raise _refuse(exc.name, exc.reason) from None
            where = f" (at or after member {_show(member.name)})" if member else ""
            raise _damaged(f"{exc.reason}{where}") from None
        extractor.finish()
    finally:
        extractor.close()
        os.close(root_fd)
    return ExtractResult(len(extractor.entries), extractor.total, extractor.entries)
