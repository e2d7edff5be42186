"""`cache prepare`: unpack now and print the version's directory.

A module of its own, reached without argparse (launcher.cli.main): install scripts,
systemd's ExecStartPre= and many cold starts at once run it, and it needs only the
warm path's modules (the `cache` command's others cost ~20 ms of imports).
"""

from __future__ import annotations

import sys

from launcher import settings
from launcher.cache import warm
from launcher.cache.paths import map_os_error
from launcher.cache.root import cache_root
from launcher.errors import ExitCode


def prepare(quiet: bool) -> int:
    """Unpack the embedded (or pinned) version now; print its directory. Says on stderr
    when this run did the unpacking (not when it was already cached)."""
    settings.check()
    try:
        acquired = warm.acquire(quiet)
    except OSError as exc:
        where = exc.filename or cache_root()
        raise map_os_error(exc, f"cache operation failed on {where}") from None
    acquired.release()
    if acquired.extracted and not quiet:
        label = acquired.manifest.get("version", "?")
        sys.stderr.write(f"auto-review: unpacked {label} ({acquired.digest[:19]})\n")
    print(acquired.layout.version_dir(acquired.digest))
    return ExitCode.OK
