"""Walking and removing cache trees that cannot be tricked, at any depth.

Every directory is opened relative to its parent's fd with O_NOFOLLOW, so a symlink is
never followed, whatever is planted or swapped in while we walk. There is no recursion:
an explicit stack holds one frame per level, and at most MAX_OPEN directory fds are open
at once; a level whose fd was closed is reopened as ".." of its child and must be the
same directory (device and inode) or the walk stops. A 10,000-deep tree is fine.

Over 300 lines: removal and walking share the one fd stack that makes both safe.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Iterator

__all__ = ["remove_tree", "tree_size", "walk", "walk_files", "warn"]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN = 64
_READ = 1 << 20
_GONE = (errno.ENOENT,)
_NOT_DIR = (errno.ENOTDIR, errno.ELOOP)

OnError = Callable[[str, OSError], None]


class _Frame:
    """One directory level: its name in the parent, fd (-1 once closed), identity, and
    the entries still to visit (a reversed list: pop() gives the next)."""

    __slots__ = ("dev", "fd", "ino", "name", "pending")

    def __init__(self, name: str, fd: int, pending: list) -> None:
        st = os.fstat(fd)
        self.name, self.fd, self.dev, self.ino = name, fd, st.st_dev, st.st_ino
        self.pending = pending


class _Stack:
    """The frames from the top directory down to the current one."""

    def __init__(self) -> None:
        self.frames: list[_Frame] = []
        self.lowest_open = 0  # frames below this index have their fd closed

    def push(self, frame: _Frame) -> None:
        self.frames.append(frame)
        if len(self.frames) - self.lowest_open > MAX_OPEN:
            old = self.frames[self.lowest_open]
            os.close(old.fd)
            old.fd = -1
            self.lowest_open += 1

    def pop(self) -> _Frame:
        """Drop the current frame and make sure its parent (if any) has an open fd.

        The returned frame's fd is still open: the caller closes it.
        """
        frame = self.frames.pop()
        if self.frames and self.frames[-1].fd < 0:
            parent = self.frames[-1]
            try:
                fd = os.open("..", DIR_FLAGS, dir_fd=frame.fd)
            except BaseException:
                os.close(frame.fd)
                frame.fd = -1
                raise
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
                os.close(fd)
                os.close(frame.fd)
                frame.fd = -1
                raise OSError(errno.ESTALE, "a directory was moved during the walk")
            parent.fd = fd
            self.lowest_open = len(self.frames) - 1
        return frame

    def path(self, top: str, name: str) -> str:
        """The path of `name` in the current directory, below `top` (for messages)."""
        return "/".join([top, *(f.name for f in self.frames[1:]), name])

    def close(self) -> None:
        for frame in self.frames:
            if frame.fd >= 0:
                os.close(frame.fd)
                frame.fd = -1
        self.frames.clear()


def warn(path: str, exc: OSError) -> None:
    """An on_error for remove_tree that prints one warning line and goes on."""
    sys.stderr.write(f"auto-review: warning: cannot delete {path}: {exc.strerror or exc}\n")


def _raise(_path: str, exc: OSError) -> None:
    raise exc


def _ignore(_path: str, _exc: OSError) -> None:
    pass


def _open_for_removal(parent_fd: int, name: str) -> int:
    """Open a directory we are about to empty, making it ours to empty (u+rwx).

    A directory published read-only (0500, 0555) cannot have entries unlinked, and one
    without u+r cannot even be listed: as a non-root owner we chmod it first, through an
    O_PATH fd so that a symlink swapped in is never followed.
    """
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            os.chmod(f"/proc/self/fd/{handle}", 0o700)  # fchmod refuses O_PATH fds
        finally:
            os.close(handle)
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(mode) | 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _entries(fd: int) -> list[tuple[str, bool]]:
    """(name, is a directory) of each entry, reversed-sorted for pop(); never follows."""
    with os.scandir(fd) as it:
        found = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    found.sort(reverse=True)
    return found


def remove_tree(path: str, *, ignore_errors: bool = False, on_error: OnError | None = None) -> None:
    """Delete `path` and everything under it, never following a symlink (rm -rf, safely).

    A symlink or file at `path` itself is unlinked, not followed; a missing path is no
    error, nor is any entry that vanishes meanwhile. Read-only directories are made
    writable first. Other errors go to `on_error(relative path, exc)` (the walk goes
    on), are dropped with `ignore_errors`, or else raise.
    """
    report = on_error or (_ignore if ignore_errors else _raise)
    path = os.path.normpath(path)
    parent_dir, top = os.path.split(path)
    if top in ("", ".", ".."):  # "", ".", "/", "a/..": never what a caller means to delete
        raise ValueError(f"refusing to remove {path!r}")
    try:
        parent_fd = os.open(parent_dir or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        report(path, exc)
        return
    try:
        _remove_below(parent_fd, top, path, report)
    finally:
        os.close(parent_fd)


def _remove_below(parent_fd: int, top: str, shown: str, report: OnError) -> None:
    try:
        os.unlink(top, dir_fd=parent_fd)
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass
    except OSError as exc:
        if exc.errno != errno.EPERM:  # unlink(2) of a directory is EISDIR on Linux, EPERM elsewhere
            report(shown, exc)
            return
    stack = _Stack()
    try:
        try:
            fd = _open_for_removal(parent_fd, top)
            stack.push(_Frame(top, fd, _entries(fd)))
        except FileNotFoundError:
            return
        except OSError as exc:
            report(shown, exc)
            return
        while stack.frames:
            frame = stack.frames[-1]
            if not frame.pending:
                try:
                    stack.pop()
                except OSError as exc:  # never go on in a directory we did not come from
                    report(shown, exc)
                    return
                os.close(frame.fd)
                frame.fd = -1
                dir_fd = stack.frames[-1].fd if stack.frames else parent_fd
                try:
                    os.rmdir(frame.name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    report(stack.path(shown, frame.name) if stack.frames else shown, exc)
                continue
            name, is_dir = frame.pending.pop()
            if not is_dir:
                try:
                    os.unlink(name, dir_fd=frame.fd)
                    continue
                except FileNotFoundError:
                    continue
                except IsADirectoryError:
                    pass  # became a directory since the listing
                except OSError as exc:
                    report(stack.path(shown, name), exc)
                    continue
            try:
                fd = _open_for_removal(frame.fd, name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in _NOT_DIR:  # swapped for a symlink or file: unlink it
                    frame.pending.append((name, False))
                else:
                    report(stack.path(shown, name), exc)
                continue
            try:
                stack.push(_Frame(name, fd, _entries(fd)))
            except OSError as exc:
                os.close(fd)
                report(stack.path(shown, name), exc)
    finally:
        stack.close()


def walk(
    root: str, on_error: Callable[[str], None] | None = None
) -> Iterator[tuple[str, os.stat_result, int, str]]:
    """(relative path, lstat, parent dir fd, name) of every entry under `root`, depth first
    in sorted order; never follows a symlink and does not descend into one.

    The parent fd is valid until the next item is asked for. A directory that cannot be
    opened is passed over with a one-line message to `on_error` ("<rel>: cannot be
    opened (<reason>)"); without on_error the OSError is raised.
    """

    def problem(message: str, exc: OSError) -> None:
        if on_error is None:
            raise exc
        on_error(f"{message} ({exc.strerror or exc})")

    stack = _Stack()
    try:
        try:
            fd = os.open(root, DIR_FLAGS)
            stack.push(_Frame("", fd, _listing(fd)))
        except OSError as exc:
            shown = os.path.basename(os.path.normpath(root))
            problem(f"{shown}/: cannot be opened as a directory", exc)
            return
        prefix = ""
        while stack.frames:
            frame = stack.frames[-1]
            if not frame.pending:
                try:
                    stack.pop()
                except OSError as exc:  # never go on in a directory we did not come from
                    problem(f"{prefix}: cannot go back up", exc)
                    return
                os.close(frame.fd)
                frame.fd = -1
                if stack.frames:
                    prefix = prefix[: len(prefix) - len(frame.name) - 1]
                continue
            name, st = frame.pending.pop()
            rel = prefix + name
            yield rel, st, frame.fd, name
            if not stat.S_ISDIR(st.st_mode):
                continue
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=frame.fd)
            except OSError as exc:
                problem(f"{rel}: cannot be opened", exc)
                continue
            try:
                stack.push(_Frame(name, fd, _listing(fd)))
            except OSError as exc:
                os.close(fd)
                problem(f"{rel}: cannot be opened", exc)
                continue
            prefix = rel + "/"
    finally:
        stack.close()


def _listing(fd: int) -> list[tuple[str, os.stat_result]]:
    with os.scandir(fd) as it:
        found = [(e.name, e.stat(follow_symlinks=False)) for e in it]
    found.sort(key=lambda item: item[0], reverse=True)
    return found


def kind_of(mode: int) -> str:
    """The file list's kind names for an lstat mode ("other": devices, FIFOs, sockets)."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def hash_at(parent_fd: int, name: str) -> str:
    """sha256 hex of a regular file, opened relative to its directory without following."""
    import hashlib  # not at the top: gc imports this module after a warm start

    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        digest = hashlib.sha256()
        buf = bytearray(_READ)
        view = memoryview(buf)
        while True:
            n = os.readv(fd, [buf])
            if not n:
                return digest.hexdigest()
            digest.update(view[:n])
    finally:
        os.close(fd)


def walk_files(
    root: str, on_error: Callable[[str], None] | None = None
) -> Iterator[tuple[str, str, int, int, str]]:
    """(relative path, kind, permission bits, size, digest) of every entry under `root`.

    The digest is the sha256 of a file's content (hashed once per inode), a symlink's
    target, or "" (directories, other kinds; size is 0 for all but files). Same order,
    symlink and error rules as walk().
    """
    hashed: dict[tuple[int, int], str] = {}
    for rel, st, parent_fd, name in walk(root, on_error):
        kind = kind_of(st.st_mode)
        size, digest = 0, ""
        if kind == "file":
            size = st.st_size
            key = (st.st_dev, st.st_ino)
            if key not in hashed:
                hashed[key] = hash_at(parent_fd, name)
            digest = hashed[key]
        elif kind == "symlink":
            digest = os.readlink(name, dir_fd=parent_fd)
        yield rel, kind, stat.S_IMODE(st.st_mode), size, digest


def tree_size(path: str) -> int:
    """Bytes of the regular files under `path` (hardlinks once); never follows a symlink.

    Unreadable parts count as 0; a missing path is 0.
    """
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(top.st_mode):
        return top.st_size if stat.S_ISREG(top.st_mode) else 0
    seen: set[tuple[int, int]] = set()
    total = 0
    for _rel, st, _fd, _name in walk(path, on_error=lambda _message: None):
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
