"""Cache garbage collection and `cache clear`: remove versions nobody runs, never one in use.

Protocol (DESIGN.md "The cache"): hold `.gc.lock` exclusive non-blocking (busy: skip).
A version goes only if its use lock can be taken exclusive non-blocking; while we hold
it, the version dir is renamed to `.trash-*` and its lock files are unlinked
(`locks.hold` re-checks the inode after locking, so a starter that raced us
retries on a fresh lock and finds the version gone). The trash is deleted after the
lock is released. Launcher code dirs are removed the same way under their own use
lock, which a starting launcher holds while it imports from them. Deletion never
follows a symlink, and only ever removes `.trash-*` / `.tmp-*` entries: anything
else is renamed to `.trash-*` first. Work dirs of any kind (bundles, code, vendor)
are removed only while their extract lock can be held.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from launcher.cache import inventory, locks
from launcher.cache.inventory import Version
from launcher.cache.paths import (
    EXTRACT_LOCK,
    LABELS,
    TRASH_PREFIX,
    USE_LOCK,
    WORK_PREFIX,
    Layout,
    check_level,
    publish_lock,
    use_lock,
)
from launcher.cache.root import owned_dir_problem
from launcher.cache.tree import remove_tree, tree_size, warn
from launcher.errors import InUse, LauncherError

DAY = 86400.0
PIN_NAME_RE = re.compile(r"^sha256-[0-9a-f]{64}$")
LOCK_FILE_RE = re.compile(r"^(sha256-[0-9a-f]{64})\.(?:use\.lock|extract\.lock|labels)$")
SIDE_SUFFIXES = (USE_LOCK, EXTRACT_LOCK, LABELS)
DELETABLE_PREFIXES = (TRASH_PREFIX, WORK_PREFIX)
LEGACY_WORK_RE = re.compile(r"\.tmp-[0-9]+$")

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
    check_level(layout.bundles, "cache directory")
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
    check_level(layout.bundles, "cache directory")
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
        if not dry_run:
            from launcher.cache import code

            code.release()  # our own code goes too; later imports come from the zip
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
    return Item(", ".join(version.labels or [version.label]), reason, size, version.digest)


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
    outcome, size = remove_in_use_guarded(version.path, used_before=seen)
    if outcome:
        report.kept.append(version_item(version, outcome))
        return False
    report.removed.append(version_item(version, why, size))
    return True


def remove_in_use_guarded(final: str, used_before: float | None = None) -> tuple[str, int]:
    """Remove a published dir (a version, launcher code) if its use lock can be held now.

    Returns ("", bytes freed) when removed, else (reason kept, 0). Its side files (locks,
    labels) go with it; a starter that raced us re-locks a fresh file and finds it gone.
    """
    held = locks.try_exclusive(use_lock(final))
    if held is None:
        return IN_USE, 0
    fd, created = held
    try:
        if used_before is not None and not created and os.fstat(fd).st_mtime > used_before + 1:
            return RECENT, 0
        parent, name = os.path.split(final)
        trash = move_to_trash(parent, name)
        for suffix in (EXTRACT_LOCK, LABELS, USE_LOCK):
            unlink_quietly(final + suffix)
    finally:
        os.close(fd)
    return "", delete(parent, trash) if trash else 0


def sweep_leftovers(layout: Layout, report: GcReport, current: str | None) -> None:
    """Remove trash, work dirs nobody publishes into, and orphan side files, in every
    directory the cache publishes into."""
    for parent in (layout.bundles, layout.code, layout.vendor):
        if os.path.lexists(parent):
            check_level(parent, "cache directory")
            sweep_work(parent, report)
    names = os.listdir(layout.bundles)
    for name in names:
        if PIN_NAME_RE.match(name):
            sweep_untrusted(layout.bundles, name, report)
    names = os.listdir(layout.bundles)
    orphans = {m.group(1) for m in map(LOCK_FILE_RE.match, names) if m}
    for dirname in sorted(orphans):
        digest = "sha256:" + dirname[7:]
        if digest != current and dirname not in names:
            sweep_orphan_side_files(os.path.join(layout.bundles, dirname), report)


def sweep_untrusted(parent: str, name: str, report: GcReport) -> None:
    """Unlink a version-named entry that is not a directory of ours (a planted symlink,
    a file): it is never read as a version, so it is only clutter. Never followed."""
    path = os.path.join(parent, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    problem = owned_dir_problem(st)
    if problem is None:
        return
    if not report.dry_run:
        trash = move_to_trash(parent, name)
        if trash:
            delete(parent, trash)
    report.leftovers.append(Item(name, f"not a version of ours: it {problem}"))


def sweep_work(parent: str, report: GcReport) -> None:
    """`.trash-*` (always ours to delete) and `.tmp-<name>-*` whose publish lock is free."""
    where = "" if os.path.basename(parent) == "bundles" else os.path.basename(parent) + "/"
    for entry in sorted(os.listdir(parent)):
        path = os.path.join(parent, entry)
        if entry.startswith(TRASH_PREFIX):
            size = tree_size(path) if report.dry_run else delete(parent, entry)
            report.leftovers.append(Item(f"{where}{entry}", "leftover trash", size))
        elif entry.startswith(WORK_PREFIX):
            name = entry[len(WORK_PREFIX) :].rsplit("-", 1)[0]
            lock_fd = locks.try_hold(publish_lock(os.path.join(parent, name)))
            if lock_fd is None:
                report.kept.append(Item(f"{where}{entry}", f"{IN_USE}: being unpacked"))
                continue
            try:
                size = tree_size(path) if report.dry_run else delete(parent, entry)
            finally:
                os.close(lock_fd)
            report.leftovers.append(Item(f"{where}{entry}", "stale work dir", size))
        elif LEGACY_WORK_RE.search(entry) and not pid_alive(int(entry.rsplit("-", 1)[1])):
            # `<name>.tmp-<pid>`, written by launchers before the publish protocol
            size = tree_size(path)
            if not report.dry_run:
                trash = move_to_trash(parent, entry)
                size = delete(parent, trash) if trash else 0
            report.leftovers.append(Item(f"{where}{entry}", "stale work dir", size))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_code(layout: Layout, report: GcReport, cutoff: float | None) -> None:
    """Remove launcher code dirs (v1/code/<id>) of other launchers, unused since `cutoff`
    (all of them when None), unless a launcher holds them in use."""
    from launcher.cache import code

    try:
        names = sorted(os.listdir(layout.code))
    except FileNotFoundError:
        return
    current = code.code_id()
    present = set(names)
    for name in names:
        if name.startswith(DELETABLE_PREFIXES):
            continue  # swept by sweep_work
        if name.endswith(SIDE_SUFFIXES):
            owner = name.rsplit(".", 2)[0]
            if owner not in present and not report.dry_run:
                sweep_orphan_side_files(os.path.join(layout.code, owner), report, quiet=True)
            continue
        if name == current and cutoff is not None:
            continue
        path = layout.code_dir(name)
        if cutoff is not None and last_used(path) >= cutoff:
            continue
        if report.dry_run:
            report.leftovers.append(Item(f"code/{name}", "launcher code", tree_size(path)))
            continue
        outcome, size = remove_in_use_guarded(path)
        if outcome:
            report.kept.append(Item(f"code/{name}", f"{outcome}: a launcher is starting"))
        else:
            report.leftovers.append(Item(f"code/{name}", "launcher code", size))


def last_used(final: str) -> float:
    """When a published dir was last used: its use lock's mtime, else its own."""
    for path in (use_lock(final), final):
        try:
            return os.lstat(path).st_mtime
        except FileNotFoundError:
            continue
    return 0.0


def sweep_orphan_side_files(final: str, report: GcReport, quiet: bool = False) -> None:
    """Unlink the side files (locks, labels) of a dir that is not there, if nobody holds
    its locks."""
    if report.dry_run:
        return
    held = locks.try_exclusive(use_lock(final))
    if held is None:
        return
    fd, _created = held
    # A publisher holds the use lock too; checking the publish lock as well costs little.
    publish_fd = locks.try_hold(publish_lock(final))
    if publish_fd is None:
        os.close(fd)
        return
    try:
        if os.path.lexists(final):
            return  # published meanwhile: its locks are live
        for suffix in (EXTRACT_LOCK, LABELS, USE_LOCK):
            unlink_quietly(final + suffix)
    finally:
        os.close(publish_fd)
        os.close(fd)
    if not quiet:
        report.leftovers.append(Item(f"{os.path.basename(final)}.*", "orphan lock files"))


def clear_vendor(layout: Layout, report: GcReport) -> None:
    """Remove the extracted vendored modules, unless an unpack (their only user) is running."""
    try:
        names = sorted(n for n in os.listdir(layout.vendor) if not n.startswith(DELETABLE_PREFIXES))
    except FileNotFoundError:
        return
    if not names:
        return
    check_level(layout.vendor, "cache directory")
    held = hold_all_extract_locks(layout)
    if held is None:
        report.kept.append(Item("vendor/", f"{IN_USE}: an unpack is in progress"))
        return
    try:
        for name in names:
            path = os.path.join(layout.vendor, name)
            if name.endswith(EXTRACT_LOCK):
                if not report.dry_run:
                    unlink_quietly(path)
                continue
            size = tree_size(path)
            if not report.dry_run:
                trash = move_to_trash(layout.vendor, name)
                size = delete(layout.vendor, trash) if trash else 0
            report.leftovers.append(Item(f"vendor/{name}", "extracted vendored module", size))
    finally:
        for fd in held:
            os.close(fd)


def hold_all_extract_locks(layout: Layout) -> list[int] | None:
    """Every version's and vendored module's extract lock, held (fds); None if any is busy."""
    held: list[int] = []
    for parent in (layout.bundles, layout.vendor):
        for name in sorted(os.listdir(parent)):
            if not name.endswith(EXTRACT_LOCK):
                continue
            fd = locks.try_hold(os.path.join(parent, name))
            if fd is None:
                for other in held:
                    os.close(other)
                return None
            held.append(fd)
    return held


# --------------------------------------------------------------------------- pins


def persistent_pins(layout: Layout) -> set[str]:
    """Digests pinned by `cache pin` (files named sha256-<hex> in pins/)."""
    if not os.path.lexists(layout.pins):
        return set()
    check_level(layout.pins, "cache directory")
    names = os.listdir(layout.pins)
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
    return layout.pin(digest)


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
    fd = locks.try_hold(layout.gc_lock)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def move_to_trash(parent: str, name: str) -> str | None:
    """Rename parent/name to a fresh parent/.trash-<name>-<pid>[-n]; its new name, or None."""
    if not os.path.lexists(os.path.join(parent, name)):
        return None
    base = f"{TRASH_PREFIX}{name}-{os.getpid()}"
    trash, n = base, 0
    while os.path.lexists(os.path.join(parent, trash)):
        n += 1
        trash = f"{base}-{n}"
    os.rename(os.path.join(parent, name), os.path.join(parent, trash))
    return trash


def delete(parent: str, name: str) -> int:
    """Delete parent/name (a `.trash-*` or `.tmp-*` entry) without following symlinks.

    Returns the bytes of regular files it held.
    """
    if os.sep in name or not name.startswith(DELETABLE_PREFIXES):
        raise ValueError(f"refusing to delete {name!r}: not a trash or work entry")
    path = os.path.join(parent, name)
    size = tree_size(path)
    remove_tree(path, on_error=warn)
    return size


def unlink_quietly(path: str) -> None:
    """Unlink a file that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
