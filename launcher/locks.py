"""flock(2) locks on files in the cache: the one primitive behind the use, extract and GC locks.

A blocking flock wakes a waiter the moment the holder releases (or dies: the
kernel drops the lock with the last fd), with no polling and no stale lock
files to break. The cache is Linux-only (OCI runtimes), so flock is always there.
"""

from __future__ import annotations

import fcntl
import os

from launcher.errors import CacheUnusable

FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def open_lock_file(path: str) -> int:
    """Open (creating, 0600) a lock file; never through a symlink."""
    try:
        return os.open(path, FLAGS, 0o600)
    except OSError as exc:
        raise CacheUnusable(
            f"cannot open the lock {path}: {exc.strerror}",
            "make the cache writable or set AUTO_REVIEW_CACHE_DIR",
        ) from None


def lock(path: str, shared: bool = False) -> int:
    """Hold `path` locked, waiting as long as it takes; returns the fd (close it to release)."""
    fd = open_lock_file(path)
    fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    return fd


def try_lock(path: str, shared: bool = False) -> int | None:
    """Hold `path` locked if nobody else does; returns the fd, or None when busy."""
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
