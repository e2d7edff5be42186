"""Get a usable rootfs for this run: the warm path, falling back to the cold path.

Warm path: lstat every cache level we trust (root's parent, root, v1, bundles, the
version dir: real directories of ours, not group/other-writable), hold the
version's use lock shared, stat the marker, touch last-used at most every few
minutes. Nothing heavy is imported before the marker is known to exist. The use
lock stays with the launcher (and the runtime process it starts) for the life of
the run; it is never passed into the sandbox.
"""

from __future__ import annotations

import os
import sys
import time

from launcher import embedded
from launcher.cache import locks
from launcher.cache.paths import (
    EXTRACT_LOCK,
    LABELS,
    USE_LOCK,
    Layout,
    check_level,
    check_root_parent,
    fix_for,
    is_published,
    open_layout,
    publish_lock,
)
from launcher.cache.root import cache_root, has_bytecode, owned_dir_problem
from launcher.errors import CacheUnusable, LauncherError, PinNotFound

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

    def release(self) -> None:
        """Stop holding the version in use."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def trusted_layout() -> Layout:
    """The layout with root, v1 and bundles checked; created (0700) where missing."""
    layout = Layout(cache_root())
    check_root_parent(layout.root)
    levels = ((layout.root, "cache root"), (layout.base, "cache directory"),
              (layout.bundles, "cache directory"))  # fmt: skip
    for path, what in levels:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return open_layout(create=True)
        problem = owned_dir_problem(st)
        if problem:
            fix = fix_for(path, problem, path is layout.root)
            raise CacheUnusable(f"{what} {path} {problem}", fix)
    return layout


def touch_last_used(fd: int, layout: Layout, digest: str, label: str) -> None:
    """Record use on the lock file's mtime, rarely, so GC knows what is stale; the same
    rare moment records this file's label for the digest."""
    now = time.time()
    if now - os.fstat(fd).st_mtime > TOUCH_EVERY:
        os.utime(fd)
        from launcher.cache import labels

        labels.record(layout, digest, label)


def acquire(quiet: bool = False) -> Acquired:
    """The version to run (pinned or embedded), published and held in use."""
    layout = trusted_layout()
    pin = os.environ.get("AUTO_REVIEW_BUNDLE", "").strip()
    if pin:
        from launcher.cache import inventory

        own = _embedded_or_none()
        version = inventory.resolve(pin, layout, own)
        digest, manifest = version.digest, version.manifest
    else:
        manifest = embedded.manifest()
        digest = manifest["digest"]
    label = str(manifest.get("version", "?"))
    fd = locks.hold(
        layout.use_lock(digest), shared=True, waiting_for=f"finish removing {label}", quiet=quiet
    )
    extracted = False
    try:
        if not os.path.exists(layout.marker(digest)):
            own = _embedded_or_none()
            if own is None or own["digest"] != digest:
                raise PinNotFound(
                    f"version {digest[:19]} is no longer in the cache",
                    "unset AUTO_REVIEW_BUNDLE to run the embedded version",
                )
            extracted = unpack(layout, own, label, quiet)
            manifest = own
        check_level(layout.version_dir(digest), "cached version")
        touch_last_used(fd, layout, digest, label)
    except BaseException:
        os.close(fd)
        raise
    if extracted:
        collect_garbage(layout, digest)
    if running_from_zip() and not has_bytecode():
        from launcher.cache import code

        code.publish_code(layout, quiet)
    return Acquired(layout, digest, manifest, fd, extracted)


def unpack(layout: Layout, own: dict[str, Any], label: str, quiet: bool) -> bool:
    """Publish the embedded version, or wait for the process that does; True if this
    call did. The version's publish lock is taken first, with only the warm path's
    modules loaded: of many cold starts at once, the waiters sleep on it without
    importing the unpacking code, and find the marker when they wake."""
    final = layout.version_dir(own["digest"])
    fd = locks.hold(
        publish_lock(final), shared=False, waiting_for=f"finish unpacking {label}", quiet=quiet
    )
    try:
        if is_published(final):
            return False
        return unpack_locked(layout, own, quiet)
    finally:
        os.close(fd)


def unpack_locked(layout: Layout, own: dict[str, Any], quiet: bool) -> bool:
    """unpack(), under the publish lock: decoding starts first, then the unpacking code
    is imported (when the zip has no bytecode for this interpreter, compiled into the
    code dir before that)."""
    if running_from_zip() and not has_bytecode():
        from launcher.cache import code

        code.use_for_later_imports(layout, quiet)
    from launcher.cache.payload import Decoding

    with Decoding(layout, own, quiet) as decoding:
        from launcher.cache import bundle

        return bundle.ensure_unpacked(layout, own, quiet, lock_held=True, decoding=decoding)


def running_from_zip() -> bool:
    """True when the launcher was imported from the zip, not from a code dir (fast when
    the zip has this interpreter's bytecode, else every import compiles)."""
    return __file__.startswith(embedded.archive_path() + os.sep)


def _embedded_or_none() -> dict[str, Any] | None:
    try:
        return embedded.manifest()
    except Exception:
        return None


def nothing_to_collect(layout: Layout, current: str) -> bool:
    """Whether the cache holds only what a first run makes: this version, this
    launcher's code dir, vendored modules, and the lock and label files of those (regular
    files). GC would find nothing there, so a first run skips it and its 9 ms of
    imports; anything else (another version or code dir, a leftover, an orphan or
    planted side file) and GC runs. GC keeps every vendor dir."""
    import stat

    from launcher.cache.code import code_id

    side = (USE_LOCK, EXTRACT_LOCK, LABELS)
    ours = {
        layout.bundles: {os.path.basename(layout.version_dir(current))},
        layout.code: {code_id()},
        layout.vendor: None,
    }
    for parent, own in ours.items():
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            continue
        finals = {name for name in names if not name.endswith(side)}
        if any(name.startswith(".") for name in names) or (own is not None and finals - own):
            return False  # work dirs, trash, other versions: GC's to sweep
        for name in names:
            suffix = next((end for end in side if name.endswith(end)), None)
            if suffix is None:
                continue
            if name[: -len(suffix)] not in finals:
                return False  # an orphan side file
            if not stat.S_ISREG(os.lstat(os.path.join(parent, name)).st_mode):
                return False  # planted: GC removes it
    return True


def collect_garbage(layout: Layout, current: str) -> None:
    """Best-effort GC after publishing a new version; housekeeping never fails the run."""
    try:
        if nothing_to_collect(layout, current):
            return
    except OSError:
        pass  # GC looks again, and says what is wrong
    from launcher.cache import gc

    try:
        gc.collect(layout, current=current)
    except Exception as exc:
        text = exc.one_line() if isinstance(exc, LauncherError) else f"{type(exc).__name__}: {exc}"
        sys.stderr.write(f"auto-review: warning: cache gc skipped: {text}\n")
