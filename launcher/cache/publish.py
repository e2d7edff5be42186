"""Publish a directory into the cache exactly once, or not at all.

One protocol for every kind of directory the cache holds (bundles, the launcher's
code, vendored native modules), in the spirit of PEX's atomic_directory:

    1. marker there?         -> published already, nothing to do
    2. hold <final>.extract.lock (blocking, with a timeout and a message)
    3. marker there now?     -> another process published it while we waited
    4. remove what a killed publisher left: .tmp-<name>-* and a <final> without marker
    5. check free space, fill a fresh .tmp-<name>-* work dir
    6. sync the tree, write the marker inside it, rename it to <final> (never replacing),
       sync the parent

Readers trust only the marker; it is written before the rename that makes the
directory visible under its final name, so a crash at any step leaves nothing or a
complete directory, and the next publisher cleans up what is left.
"""

from __future__ import annotations

import errno
import os

from launcher.cache import locks
from launcher.cache.paths import (
    SPACE_FIX,
    TRASH_PREFIX,
    is_published,
    map_os_error,
    publish_lock,
    work_prefix,
)
from launcher.cache.root import MARKER
from launcher.errors import LauncherError, NoSpace

SPACE_MARGIN = 16 << 20

TYPE_CHECKING = False  # typing and collections.abc cost milliseconds on every warm start
if TYPE_CHECKING:
    from collections.abc import Callable


def publish(
    final: str,
    fill: Callable[[str], None],
    *,
    waiting_for: str,
    needed_bytes: int = 0,
    quiet: bool = False,
    lock_held: bool = False,
) -> bool:
    """Build `final` with `fill(work_dir)` unless it is published; True if this call did.

    `fill` writes into the empty work dir it is given and raises on any failure; its
    work is then thrown away. OSErrors become the launcher's errors (ENOSPC -> NoSpace).
    `lock_held`: the caller holds `final`'s publish lock already (steps 2-3 are its).
    """
    if is_published(final):
        return False
    if lock_held:
        return _publish_locked(final, fill, needed_bytes)
    lock_fd = locks.hold(publish_lock(final), shared=False, waiting_for=waiting_for, quiet=quiet)
    try:
        return _publish_locked(final, fill, needed_bytes)
    finally:
        os.close(lock_fd)


def _publish_locked(final: str, fill: Callable[[str], None], needed_bytes: int) -> bool:
    """Steps 3-6, under the publish lock."""
    if is_published(final):
        return False
    parent, name = os.path.split(final)
    remove_leftovers(parent, name)
    if needed_bytes:
        check_free_space(parent, needed_bytes)
    made: list[str] = []  # named before it exists: a Ctrl-C right after mkdir leaves none
    try:
        work = make_work_dir(parent, work_prefix(name), made)
        fill(work)
        sync_tree(work)
        write_marker(work)
        rename_no_replace(work, final)
        fsync_dir(parent)
    except BaseException as exc:
        from launcher.cache.tree import remove_tree

        for path in made:  # under the publish lock: no other launcher makes these names
            remove_tree(path, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, LauncherError):
            raise map_os_error(exc, f"cannot write the cache {parent}") from None
        raise
    return True


def make_work_dir(parent: str, prefix: str, made: list[str] | None = None) -> str:
    """A new private directory `parent/prefix<random>`: tempfile.mkdtemp's job, without
    importing tempfile (with random and shutil, 8 ms of every cold start's CPU). Its
    path is put in `made`, if given, before it is created."""
    for _ in range(100):
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        if made is not None:
            made.append(path)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if made is not None:
                made.pop()  # not ours
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused work dir name", parent)


def remove_leftovers(parent: str, name: str) -> None:
    """Delete work dirs of `name` and an unpublished `final` (the caller holds its lock)."""
    from launcher.cache.tree import remove_tree

    prefix = work_prefix(name)
    for entry in os.listdir(parent):
        if entry.startswith(prefix) or entry.startswith(f"{TRASH_PREFIX}{name}-"):
            remove_tree(os.path.join(parent, entry), ignore_errors=True)
    final = os.path.join(parent, name)
    if os.path.lexists(final):  # a directory without its marker was never published
        trash = os.path.join(parent, f"{TRASH_PREFIX}{name}-{os.getpid()}")
        os.rename(final, trash)
        remove_tree(trash, ignore_errors=True)


def check_free_space(path: str, needed: int) -> None:
    """Refuse early when the filesystem cannot hold what is about to be written."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free < needed + SPACE_MARGIN:
        raise NoSpace(
            f"not enough space to unpack in {path}: need {(needed + SPACE_MARGIN) >> 20} MiB,"
            f" {free >> 20} MiB free",
            SPACE_FIX,
        )


EARLY_WRITEBACK_BYTES = 256 << 10  # smaller files are left to the one sync at the end


def writeback_starter() -> Callable[[int, int], None] | None:
    """A `written(fd, size)` hook for an extraction: for a large file, start writing its
    pages to disk without waiting (sync_file_range(2), SYNC_FILE_RANGE_WRITE, as git's
    core.fsyncMethod=batch does), so that the sync before publishing (sync_tree) has
    less left to wait for. None where the call is missing (not Linux)."""
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError):  # no ctypes in this Python, or not Linux
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    write = 2  # SYNC_FILE_RANGE_WRITE: start writeback of dirty pages, do not wait

    def start(fd: int, size: int) -> None:
        if size >= EARLY_WRITEBACK_BYTES:
            call(fd, 0, 0, write)  # a failure here is the sync's to report

    return start


SMALL_TREE = 32  # entries: below this, an fsync each is cheaper than a syncfs


def sync_tree(path: str) -> None:
    """Flush everything written under `path`: an fsync per entry for a small tree (the
    launcher's code is one file, the vendored module two), one syncfs for a large one
    (a rootfs: one call instead of hundreds, whatever else the filesystem holds)."""
    entries = small_tree(path)
    if entries is not None:
        for entry in entries:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (ImportError, OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def small_tree(path: str) -> list[str] | None:
    """Every file and directory under `path` (deepest first), or None past SMALL_TREE."""
    found: list[str] = []
    stack = [path]
    while stack:
        top = stack.pop()
        found.append(top)
        with os.scandir(top) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    found.append(entry.path)
                if len(found) + len(stack) > SMALL_TREE:
                    return None
    return found[::-1]


def write_marker(work: str) -> None:
    """The marker readers trust, durable before the rename that publishes it."""
    fd = os.open(os.path.join(work, MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(work)


def rename_no_replace(src: str, dst: str) -> None:
    """rename(2) that never replaces what is there."""
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "already published", dst)
    os.rename(src, dst)  # only an empty dir could be replaced, and the lock excludes that


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
