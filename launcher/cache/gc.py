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

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from launcher.cache import inventory, locks
from launcher.cache.inventory import Version
from launcher.cache.paths import Layout, check_level
from launcher.cache.removal import (
    BUSY,
    CURRENT,
    ENV_PINNED,
    IN_USE,
    PINNED,
    RECENT,
    WITHIN_KEEP,
    GcReport,
    Item,
    remove_in_use_guarded,
    unlink_quietly,
)
from launcher.cache.sweep import (
    clear_vendor,
    sweep_code,
    sweep_leftovers,
    sweep_planted_side_files,
)
from launcher.cache.tree import tree_size
from launcher.errors import InUse, LauncherError

DAY = 86400.0
PIN_NAME_RE = re.compile(r"^sha256-[0-9a-f]{64}$")


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
        sweep_planted_side_files(layout, report)
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
        sweep_planted_side_files(layout, report)
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


def drop_pin(layout: Layout, digest: str, label: str, report: GcReport) -> None:
    """Remove the pin file of a removed (or never cached) version, and say so."""
    if not report.dry_run:
        unlink_quietly(layout.pin(digest))
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
