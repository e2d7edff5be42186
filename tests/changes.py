"""Waiting for a condition without a clock: re-check it each time something it depends on
changes (a file in a watched directory, through inotify; a request to a loopback
stand-in, through its change pipe), and give up only after a timeout."""

from __future__ import annotations

import ctypes
import os
import select
import time
from collections.abc import Callable, Iterable
from pathlib import Path

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x2, 0x8, 0x80, 0x100, 0x200
IN_NONBLOCK = os.O_NONBLOCK
_libc = ctypes.CDLL(None, use_errno=True)


def _inotify(dirs: Iterable[Path]) -> int:
    fd = _libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
    for path in dirs:
        if _libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
    return fd


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass


def wait_until(
    predicate: Callable[[], bool],
    *,
    dirs: Iterable[Path] = (),
    change_fds: Iterable[int] = (),
    timeout: float = 30,
    what: str = "a condition",
) -> None:
    """Return once `predicate()` holds; it is checked first, then after each change."""
    watch = _inotify(dirs)
    fds = [watch, *change_fds]
    deadline = time.monotonic() + timeout
    try:
        while not predicate():
            left = deadline - time.monotonic()
            ready, _w, _x = select.select(fds, [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            for fd in ready:
                _drain(fd)
    finally:
        os.close(watch)
