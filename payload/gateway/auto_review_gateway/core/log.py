"""The gateway's log: one line at a time to stderr, written whole from any thread."""

from __future__ import annotations

import sys
import threading

_log_lock = threading.Lock()


def log(line: str) -> None:
    """Write one line to stderr (whole lines, even from many threads)."""
    with _log_lock:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
