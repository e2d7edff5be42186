"""Get a usable rootfs for this run: the warm path, falling back to the cold path.

Warm path (DESIGN.md): open the version's use lock, flock(LOCK_SH), stat the
marker, touch last-used at most every few minutes. Nothing heavy is imported
before the marker is known to exist. The returned lock fd is meant to be
inherited by the runtime, so the version counts as in use while the sandbox lives.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from launcher import embedded
from launcher.errors import CacheUnusable, LauncherError, PinNotFound
from launcher.layout import Layout, cache_root, check_owned_dir, open_layout

TOUCH_EVERY = 300.0  # seconds between last-used updates

TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from typing import Any


class Acquired:
    """A published version held in use by this process (through `lock_fd`)."""

    __slots__ = ("digest", "extracted", "layout", "lock_fd", "manifest")

    def __init__(
        self, layout: Layout, digest: str, manifest: dict[str, Any], lock_fd: int, extracted: bool
    ) -> None:
        self.layout = layout
        self.digest = digest
        self.manifest = manifest
        self.lock_fd = lock_fd
        self.extracted = extracted

    @property
    def rootfs(self) -> str:
        return self.layout.rootfs(self.digest)


def open_use_lock(layout: Layout, digest: str) -> int:
    """Open (creating) the version's use lock and hold it shared.

    GC unlinks the lock file of a version it removes while holding it exclusive,
    so after locking we check the path still names our inode, else retry.
    """
    path = layout.use_lock(digest)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(100):
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            open_layout(create=True)
            continue
        except OSError as exc:
            raise CacheUnusable(
                f"cannot open {path}: {exc.strerror}",
                "set AUTO_REVIEW_CACHE_DIR to a writable directory",
            ) from None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise CacheUnusable(
        f"cannot hold {path}: it keeps being replaced", "check what else uses the cache"
    )


def touch_last_used(fd: int) -> None:
    """Record use on the lock file's mtime, rarely, so GC knows what is stale."""
    now = time.time()
    if now - os.fstat(fd).st_mtime > TOUCH_EVERY:
        os.utime(fd)


def acquire(quiet: bool = False) -> Acquired:
    """The version to run (pinned or embedded), published and held in use."""
    root = cache_root()
    if os.path.lexists(root):
        check_owned_dir(root, "cache root")
        layout = Layout(root)
    else:
        layout = open_layout(create=True)
    pin = os.environ.get("AUTO_REVIEW_BUNDLE", "").strip()
    if pin:
        from launcher import inventory

        own = _embedded_or_none()
        version = inventory.resolve(pin, layout, own)
        digest, manifest = version.digest, version.manifest
    else:
        manifest = embedded.manifest()
        digest = manifest["digest"]
    fd = open_use_lock(layout, digest)
    extracted = False
    try:
        if not os.path.exists(layout.marker(digest)):
            own = _embedded_or_none()
            if own is None or own["digest"] != digest:
                raise PinNotFound(
                    f"version {digest[:19]} is no longer in the cache",
                    "unset AUTO_REVIEW_BUNDLE to run the embedded version",
                )
            if running_from_zip():
                from launcher import codecache

                codecache.use_for_later_imports(layout)
            from launcher import unpack

            extracted = unpack.ensure_unpacked(layout, own, quiet)
            manifest = own
        touch_last_used(fd)
    except BaseException:
        os.close(fd)
        raise
    if extracted:
        collect_garbage(layout, digest)
    if running_from_zip():
        from launcher import codecache

        codecache.publish(layout)
    return Acquired(layout, digest, manifest, fd, extracted)


def running_from_zip() -> bool:
    """True when the launcher was imported from the zip (no bytecode cached: slow imports)."""
    return __file__.startswith(embedded.archive_path() + os.sep)


def _embedded_or_none() -> dict[str, Any] | None:
    try:
        return embedded.manifest()
    except Exception:
        return None


def collect_garbage(layout: Layout, current: str) -> None:
    """Best-effort GC after publishing a new version; housekeeping never fails the run."""
    from launcher import gc

    try:
        gc.collect(layout, current=current)
    except (LauncherError, OSError) as exc:
        sys.stderr.write(f"auto-review: warning: cache gc skipped: {exc}\n")
