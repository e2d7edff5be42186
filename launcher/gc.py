"""Cache garbage collection and `cache clear`: remove versions nobody runs, never one in use.

Protocol (DESIGN.md "The cache"): hold `.gc.lock` exclusive non-blocking (busy: skip).
A version goes only if its use lock can be taken exclusive non-blocking; while we hold
it, the version dir is renamed to `.trash-*` and its lock files are unlinked
(`start.open_use_lock` re-checks the inode after locking, so a starter that raced us
retries on a fresh lock and finds the version gone). The trash is deleted after the
lock is released. Deletion never follows a symlink, and only ever removes
`.trash-*` / `.tmp-*` entries of `bundles/` or `vendor/`: anything else is renamed
to `.trash-*` first.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from launcher import inventory, locks
from launcher.cache import tree
from launcher.errors import CacheUnusable, InUse, LauncherError
from launcher.inventory import Version
from launcher.layout import Layout, check_owned_dir

DAY = 86400.0
PIN_NAME_RE = re.compile(r"^sha256-[0-9a-f]{64}$")
WORK_DIR_RE = re.compile(r"^\.tmp-(sha256-[0-9a-f]{64})-")
LOCK_FILE_RE = re.compile(r"^(sha256-[0-9a-f]{64})\.(?:use|extract)\.lock$")
DELETABLE_PREFIXES = (".trash-", ".tmp-")

IN_USE = "in use"
CURRENT = "current"
PINNED = "pinned"
ENV_PINNED = "pinned by AUTO_REVIEW_BUNDLE"
RECENT = "recent"
WITHIN_KEEP = "within keep"
BUSY = "another cache gc or clear is running"


@dataclasses.dataclass
class Item:
    """One thing GC or clear removed or kept, and why."""

    name: str
    """A version's label, or a leftover's file name."""
    reason: str
    size: int = 0
    digest: str = ""

    @property
    def title(self) -> str:
        """'0.1.0 (sha256:0123456789ab)' for versions, the file name otherwise."""
        return f"{self.name} ({self.digest[:19]})" if self.digest else self.name


@dataclasses.dataclass
class GcReport:
    """What a GC or clear run did (or, with dry_run, would do)."""

    removed: list[Item] = dataclasses.field(default_factory=list)
    """Versions removed."""
    kept: list[Item] = dataclasses.field(default_factory=list)
    """Versions (and busy leftovers) kept, each with its reason."""
    leftovers: list[Item] = dataclasses.field(default_factory=list)
    """Trash, stale work dirs, orphan lock files and vendored modules removed."""
    unpinned: list[Item] = dataclasses.field(default_factory=list)
    """Pins dropped because their version was removed (clear only)."""
    skipped: str = ""
    """Non-empty when the run did nothing at all, and why."""
    dry_run: bool = False

    @property
    def freed(self) -> int:
        """Bytes removed (or that would be)."""
        return sum(i.size for i in self.removed) + sum(i.size for i in self.leftovers)

    @property
    def any_in_use(self) -> bool:
        """True if something was kept only because it is in use."""
        return any(i.reason.startswith(IN_USE) for i in self.kept)


def collect(
    layout: Layout,
    *,
    current: str | None,
    keep: int = 1,
    older_than_days: float = 7.0,
    dry_run: bool = False,
    now: float | None = None,
) -> GcReport:
    """Remove stale versions: not `current`, not pinned, beyond the newest `keep`, old.

    `keep` counts the most recently used versions other than the current and the
    pinned ones (rollback targets). A busy `.gc.lock` skips the run without error.
    """
    report = GcReport(dry_run=dry_run)
    if not os.path.lexists(layout.bundles):
        return report
    check_owned_dir(layout.bundles, "cache directory")
    with gc_lock(layout) as held:
        if not held:
            report.skipped = BUSY
            return report
        now = time.time() if now is None else now
        versions = inventory.cached_versions(layout)
        pins = pinned(layout, embedded_manifest())
        cutoff = now - older_than_days * DAY
        for version, reason in triage(versions, current, pins, keep, cutoff):
            if reason:
                report.kept.append(version_item(version, reason))
            else:
                age = f"unused for {(now - version.last_used) / DAY:.1f} days"
                remove_or_keep(layout, version, age, report, recheck=True)
        sweep_leftovers(layout, report, current)
        sweep_code(layout, report, cutoff)
    return report


def clear(layout: Layout, *, dry_run: bool = False) -> GcReport:
    """Remove every version not in use (pinned ones too, with their pins) and all leftovers.

    Raises InUse when another GC or clear holds the GC lock.
    """
    report = GcReport(dry_run=dry_run)
    if not os.path.lexists(layout.bundles):
        return report
    check_owned_dir(layout.bundles, "cache directory")
    with gc_lock(layout) as held:
        if not held:
            raise InUse(f"cannot clear the cache: {BUSY}", "try again in a moment")
        pins = persistent_pins(layout)
        for version in inventory.cached_versions(layout):
            removed = remove_or_keep(layout, version, "not in use", report, recheck=False)
            if version.digest in pins:
                pins.discard(version.digest)
                if removed:
                    drop_pin(layout, version.digest, version.label, report)
        for digest in sorted(pins):  # pins of versions that are not in the cache
            drop_pin(layout, digest, "not cached", report)
        sweep_leftovers(layout, report, current=None)
        clear_vendor(layout, report)
        sweep_code(layout, report, cutoff=None)
    return report


def triage(
    versions: list[Version],
    current: str | None,
    pins: dict[str, str],
    keep: int,
    cutoff: float,
) -> list[tuple[Version, str]]:
    """Each version with the reason to keep it, or "" for a removal candidate.

    `versions` must be sorted newest use first (as inventory.cached_versions does).
    """
    out = []
    ranked = 0
    for version in versions:
        if version.digest == current:
            reason = CURRENT
        elif version.digest in pins:
            reason = pins[version.digest]
        elif ranked < keep:
            ranked += 1
            reason = WITHIN_KEEP
        elif version.last_used > cutoff:
            reason = RECENT
        else:
            reason = ""
        out.append((version, reason))
    return out


def version_item(version: Version, reason: str, size: int = 0) -> Item:
    """A report line for a version."""
    return Item(version.label, reason, size, version.digest)


def remove_or_keep(
    layout: Layout, version: Version, why: str, report: GcReport, *, recheck: bool
) -> bool:
    """Remove one version unless it is in use; record the outcome. True if removed.

    With `recheck`, a version whose use lock was touched since it was listed (a run
    started and ended meanwhile) is kept as recent.
    """
    if report.dry_run:
        if inventory.is_in_use(layout, version.digest):
            report.kept.append(version_item(version, IN_USE))
            return False
        report.removed.append(version_item(version, why, tree_size(version.path)))
        return True
    seen = version.last_used if recheck else None
    outcome, size = remove_version(layout, version.digest, used_before=seen)
    if outcome:
        report.kept.append(version_item(version, outcome))
        return False
    report.removed.append(version_item(version, why, size))
    return True


def remove_version(
    layout: Layout, digest: str, used_before: float | None = None
) -> tuple[str, int]:
    """Remove a version if its use lock can be taken exclusive now.

    Returns ("", bytes freed) when removed, else (reason kept, 0).
    """
    held = try_exclusive(layout.use_lock(digest))
    if held is None:
        return IN_USE, 0
    fd, created = held
    try:
        if used_before is not None and not created and os.fstat(fd).st_mtime > used_before + 1:
            return RECENT, 0
        trash = move_to_trash(layout.bundles, layout.dirname(digest))
        for path in (layout.extract_lock(digest), layout.use_lock(digest)):
            unlink_quietly(path)
    finally:
        os.close(fd)
    return "", delete(layout.bundles, trash) if trash else 0


def sweep_leftovers(layout: Layout, report: GcReport, current: str | None) -> None:
    """Remove `.trash-*`, `.tmp-*` work dirs nobody extracts into, and orphan lock files."""
    names = sorted(os.listdir(layout.bundles))
    for name in names:
        if name.startswith(".trash-"):
            size = tree_size(os.path.join(layout.bundles, name))
            if not report.dry_run:
                size = delete(layout.bundles, name)
            report.leftovers.append(Item(name, "leftover trash", size))
    for name in names:
        match = WORK_DIR_RE.match(name)
        if match:
            sweep_work_dir(layout, name, "sha256:" + match.group(1)[7:], report)
    names = os.listdir(layout.bundles)  # sweep_work_dir may have created lock files
    orphans = {m.group(1) for m in map(LOCK_FILE_RE.match, names) if m}
    for dirname in sorted(orphans):
        digest = "sha256:" + dirname[7:]
        if digest != current and dirname not in names:
            sweep_orphan_locks(layout, digest, report)


def sweep_code(layout: Layout, report: GcReport, cutoff: float | None) -> None:
    """Remove launcher code dirs (v1/code/<id>) of other launchers, unused since `cutoff`
    (all of them when None). A running launcher has its code loaded already; the
    next start of another single file simply unpacks its code again."""
    from launcher import codecache

    parent = os.path.join(layout.base, "code")
    try:
        names = sorted(os.listdir(parent))
    except FileNotFoundError:
        return
    current = codecache.code_id()
    for name in names:
        if name == current and cutoff is not None:
            continue
        path = os.path.join(parent, name)
        if cutoff is not None and os.lstat(path).st_mtime >= cutoff:
            continue
        size = tree_size(path)
        if not report.dry_run:
            trash = name if name.startswith(".tmp-") else move_to_trash(parent, name)
            size = delete(parent, trash) if trash else 0
        report.leftovers.append(Item(f"code/{name}", "launcher code of another version", size))


def sweep_work_dir(layout: Layout, name: str, digest: str, report: GcReport) -> None:
    """Remove one `.tmp-*` work dir unless an extraction holds its version's extract lock."""
    lock_fd = locks.try_lock(layout.extract_lock(digest))
    if lock_fd is None:
        report.kept.append(Item(name, f"{IN_USE}: an unpack is in progress"))
        return
    try:
        size = tree_size(os.path.join(layout.bundles, name))
        if not report.dry_run:
            size = delete(layout.bundles, name)
        report.leftovers.append(Item(name, "stale work dir", size))
    finally:
        os.close(lock_fd)


def sweep_orphan_locks(layout: Layout, digest: str, report: GcReport) -> None:
    """Unlink the lock files of a version that is not in the cache, if nobody holds them."""
    if report.dry_run:
        return
    held = try_exclusive(layout.use_lock(digest))
    if held is None:
        return
    fd, _created = held
    # An unpack holds the use lock too; checking the extract lock as well costs little.
    extract_fd = locks.try_lock(layout.extract_lock(digest))
    if extract_fd is None:
        os.close(fd)
        return
    try:
        if os.path.lexists(layout.version_dir(digest)):
            return  # published meanwhile: its locks are live
        for path in (layout.extract_lock(digest), layout.use_lock(digest)):
            unlink_quietly(path)
    finally:
        os.close(extract_fd)
        os.close(fd)
    report.leftovers.append(Item(f"{layout.dirname(digest)}.*.lock", "orphan lock files"))


def clear_vendor(layout: Layout, report: GcReport) -> None:
    """Remove the extracted vendored modules, unless an unpack (their only user) is running."""
    try:
        names = sorted(os.listdir(layout.vendor))
    except FileNotFoundError:
        return
    if not names:
        return
    check_owned_dir(layout.vendor, "cache directory")
    held = hold_all_extract_locks(layout)
    if held is None:
        report.kept.append(Item("vendor/", f"{IN_USE}: an unpack is in progress"))
        return
    try:
        for name in names:
            path = os.path.join(layout.vendor, name)
            size = tree_size(path)
            if not report.dry_run:
                trash = move_to_trash(layout.vendor, name)
                size = delete(layout.vendor, trash) if trash else 0
            report.leftovers.append(Item(f"vendor/{name}", "extracted vendored module", size))
    finally:
        for fd in held:
            os.close(fd)


def hold_all_extract_locks(layout: Layout) -> list[int] | None:
    """Every version's extract lock, held (fds); None (nothing held) if any is busy."""
    held: list[int] = []
    for name in sorted(os.listdir(layout.bundles)):
        if not name.endswith(".extract.lock"):
            continue
        fd = locks.try_lock(os.path.join(layout.bundles, name))
        if fd is None:
            for other in held:
                os.close(other)
            return None
        held.append(fd)
    return held


# --------------------------------------------------------------------------- pins


def persistent_pins(layout: Layout) -> set[str]:
    """Digests pinned by `cache pin` (files named sha256-<hex> in pins/)."""
    try:
        names = os.listdir(layout.pins)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {"sha256:" + name[7:] for name in names if PIN_NAME_RE.match(name)}


def env_pin(layout: Layout, embedded: dict[str, Any] | None) -> str | None:
    """The digest AUTO_REVIEW_BUNDLE names, if it names an available version."""
    value = os.environ.get("AUTO_REVIEW_BUNDLE", "").strip()
    if not value:
        return None
    try:
        return inventory.resolve(value, layout, embedded).digest
    except LauncherError:
        return None


def pinned(layout: Layout, embedded: dict[str, Any] | None) -> dict[str, str]:
    """digest -> how it is pinned, for every pinned version."""
    pins = dict.fromkeys(persistent_pins(layout), PINNED)
    from_env = env_pin(layout, embedded)
    if from_env and from_env not in pins:
        pins[from_env] = ENV_PINNED
    return pins


def pin_path(layout: Layout, digest: str) -> str:
    """The pin file of a version."""
    return os.path.join(layout.pins, layout.dirname(digest))


def drop_pin(layout: Layout, digest: str, label: str, report: GcReport) -> None:
    """Remove the pin file of a removed (or never cached) version, and say so."""
    if not report.dry_run:
        unlink_quietly(pin_path(layout, digest))
    report.unpinned.append(Item(label, "", 0, digest))


def embedded_manifest() -> dict[str, Any] | None:
    """The embedded bundle's manifest, or None when running from a source tree."""
    from launcher import embedded

    try:
        return embedded.manifest()
    except LauncherError:
        return None


# --------------------------------------------------------------------------- files


@contextmanager
def gc_lock(layout: Layout) -> Iterator[bool]:
    """Try to hold `.gc.lock` exclusive without waiting; yields whether we hold it."""
    try:
        fd = os.open(layout.gc_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CacheUnusable(
            f"cannot open {layout.gc_lock}: {exc.strerror}",
            "make the cache writable or set AUTO_REVIEW_CACHE_DIR",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def try_exclusive(path: str) -> tuple[int, bool] | None:
    """Open (creating if needed) and lock `path` exclusive without waiting.

    Returns (fd, created) or None when someone holds it. A missing lock must be
    created and locked, not skipped: a starter may be about to create it.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    created = False
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT, 0o600)
        created = True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A lock on an inode that is no longer at `path` protects nothing.
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            return fd, created
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def move_to_trash(parent: str, name: str) -> str | None:
    """Rename parent/name to a fresh parent/.trash-<name>-<pid>[-n]; its new name, or None."""
    if not os.path.lexists(os.path.join(parent, name)):
        return None
    base = f".trash-{name}-{os.getpid()}"
    trash, n = base, 0
    while os.path.lexists(os.path.join(parent, trash)):
        n += 1
        trash = f"{base}-{n}"
    os.rename(os.path.join(parent, name), os.path.join(parent, trash))
    return trash


def delete(parent: str, name: str) -> int:
    """Delete parent/name (a `.trash-*` or `.tmp-*` entry) without following symlinks.

    Returns the bytes of regular files it held. Errors other than a vanished entry
    leave the rest for the next run.
    """
    if os.sep in name or not name.startswith(DELETABLE_PREFIXES):
        raise ValueError(f"refusing to delete {name!r}: not a trash or work entry")
    path = os.path.join(parent, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        unlink_quietly(path)
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    size = tree.tree_size(path)
    tree.remove_tree(path, on_error=tree.warn)
    return size


def rmtree_no_follow(path: str) -> None:
    """shutil.rmtree, which on Linux works on directory fds and unlinks symlinks unfollowed."""
    if not shutil.rmtree.avoids_symlink_attacks:
        raise CacheUnusable(
            "this platform cannot delete directories safely", "remove the cache by hand"
        )

    def ignore_vanished(_func: Any, failed: str, exc: Any) -> None:
        error = exc[1] if isinstance(exc, tuple) else exc
        if not isinstance(error, FileNotFoundError):
            sys.stderr.write(f"auto-review: warning: cannot delete {failed}: {error}\n")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=ignore_vanished)
    else:
        shutil.rmtree(path, onerror=ignore_vanished)


def tree_size(path: str) -> int:
    """Bytes of the regular files under `path` (hardlinks once), without following symlinks."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(top.st_mode):
        return top.st_size if stat.S_ISREG(top.st_mode) else 0
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def unlink_quietly(path: str) -> None:
    """Unlink a file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
