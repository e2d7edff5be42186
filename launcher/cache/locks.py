"""Every lock of the cache: flock(2) on lock files beside what they guard.

    use lock      shared, held by a launcher for as long as its version (or code) runs;
                  GC and clear remove a version only while they hold it exclusive.
    extract lock  exclusive, held while a directory is published (bundle, code, vendor).
    .gc.lock      exclusive non-blocking: one GC or clear at a time; a busy one is skipped.

Why fcntl.flock and not filelock, the project's chosen lock package: the use lock is
a *shared* flock held for the life of a run, a kind filelock lacks (its read/write lock
is SQLite-based); and the exclusive locks are taken on every cold start by the
extractor and every waiter, where `import filelock` (4.3) measured 45 ms from bytecode
and about 85 ms from the zip (python -X importtime), and where filelock's Unix lock
waits by polling while a blocking flock wakes the moment the holder releases or dies.

Lock files are opened read-only (flock needs no write access), never through a
symlink, and a lock is only trusted while the path still names the locked inode:
GC unlinks the lock files of what it removes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys

from launcher import settings
from launcher.errors import CacheUnusable, InUse

# O_NONBLOCK: a FIFO planted as a lock file must not hang the open (flock ignores it)
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
ATTEMPTS = 100


class _TimedOut(Exception):
    pass


class Abandoned(BaseException):
    """A thread's lock wait stopped: the main thread is ending the run (abandon_waits)."""


_abandoned: list[bool] = []  # [True]: threads of this process stop waiting for locks


def abandon_waits() -> None:
    """Make every lock wait of this process's other threads raise Abandoned: the main
    thread is ending the run (an error, Ctrl-C) and joins them, which must not wait
    for another launcher's publish. For the rest of the process."""
    _abandoned.append(True)


def open_lock_file(path: str, create: bool = True) -> int:
    """Open a lock file read-only (creating it 0600), never through a symlink, and only
    if it is a regular file."""
    try:
        fd = os.open(path, OPEN_FLAGS | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise not_a_file(path) from None
        from launcher.cache.paths import map_os_error

        raise map_os_error(exc, f"cannot open the lock {path}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_a_file(path)
    return fd


def not_a_file(path: str) -> CacheUnusable:
    """The error for a lock file that someone replaced by a symlink, FIFO or directory."""
    return CacheUnusable(
        f"the lock {path} is not a regular file", f"remove it (rm {path}) and run again"
    )


def _still_at(path: str, fd: int) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def hold(path: str, *, shared: bool, waiting_for: str = "", quiet: bool = False) -> int:
    """Hold `path` locked (shared or exclusive), waiting at most
    AUTO_REVIEW_LOCK_TIMEOUT (launcher.settings).

    Returns the fd; close it to release. While it waits it says so once on stderr,
    naming the holder's pid and `waiting_for` ("finish unpacking 0.1.0"); when the
    wait times out it raises InUse with the same names.
    """
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    for _attempt in range(ATTEMPTS):
        fd = open_lock_file(path)
        try:
            _flock_waiting(fd, op, path, waiting_for, quiet)
        except BaseException:
            os.close(fd)
            raise
        if _still_at(path, fd):
            return fd
        os.close(fd)  # unlinked by GC while we waited: lock the new file
    raise CacheUnusable(
        f"cannot hold {path}: it keeps being replaced", "check what else uses the cache"
    )


def _flock_waiting(fd: int, op: int, path: str, waiting_for: str, quiet: bool) -> None:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    timeout = settings.lock_timeout()
    pid = holder_pid(fd)
    who = f"another auto-review (pid {pid})" if pid else "another auto-review"
    what = waiting_for or f"release {os.path.basename(path)}"
    if not quiet:
        os.write(2, f"auto-review: waiting for {who} to {what}\n".encode())
    try:
        _flock_with_alarm(fd, op, timeout)
    except _TimedOut:
        raise InUse(
            f"gave up after {timeout:g} s waiting for {who} to {what}",
            f"if pid {pid} is hung, stop it; or raise AUTO_REVIEW_LOCK_TIMEOUT"
            if pid
            else "try again, or raise AUTO_REVIEW_LOCK_TIMEOUT",
        ) from None


def _flock_with_alarm(fd: int, op: int, timeout: float) -> None:
    """A blocking flock that SIGALRM interrupts after `timeout` (Python retries EINTR
    unless the handler raises). Only the main thread may set a signal handler: the cold
    path's threads (the decoder publishing the vendored module, the code dir's writer)
    poll instead."""
    if not _in_main_thread():
        _flock_polling(fd, op, timeout)
        return

    # _signal, the module `signal` wraps: the same calls without `signal`'s import of
    # enum, which with threading's imports cost a start that waits behind another's
    # unpack 5.8 ms of its 20.7 ms of CPU (median of 15).
    import _signal

    def expire(_signum: int, _frame: object) -> None:
        raise _TimedOut

    previous = _signal.signal(_signal.SIGALRM, expire)
    _signal.setitimer(_signal.ITIMER_REAL, timeout)
    try:
        fcntl.flock(fd, op)
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, previous)


def _in_main_thread() -> bool:
    """Whether this is the main thread, without importing threading: a process that
    has not imported it started no thread of ours."""
    threading = sys.modules.get("threading")
    return threading is None or threading.current_thread() is threading.main_thread()


POLL_MAX = 0.05  # seconds between tries of a thread's flock, at most


def _flock_polling(fd: int, op: int, timeout: float) -> None:
    """flock without a signal: try, sleep a little longer each time, until `timeout`
    or until abandon_waits()."""
    import time

    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if _abandoned:
            raise Abandoned
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TimedOut
        time.sleep(min(pause, left))
        pause = min(pause * 2, POLL_MAX)


def try_exclusive(path: str) -> tuple[int, bool] | None:
    """Hold `path` exclusive if nobody holds it; (fd, whether we created it) or None.

    A missing lock file is created and locked, not skipped: a starter may be about to
    create it.
    """
    created = False
    try:
        fd = open_lock_file(path, create=False)
    except FileNotFoundError:
        fd = open_lock_file(path)
        created = True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _still_at(path, fd):
            return fd, created
    except BlockingIOError:
        pass
    os.close(fd)
    return None


def try_hold(path: str) -> int | None:
    """Hold `path` exclusive without waiting; the fd, or None when busy."""
    held = try_exclusive(path)
    return held[0] if held else None


def is_held(path: str) -> bool:
    """True if someone holds `path` (shared or exclusive); never creates it."""
    try:
        fd = open_lock_file(path, create=False)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def holder_pid(fd: int) -> int | None:
    """The pid holding a flock on the file behind `fd`, from /proc/locks (None if unknown)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"; "->" marks waiters
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None
