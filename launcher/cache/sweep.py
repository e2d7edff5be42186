"""Sweeping what killed processes and other launchers left: trash, work dirs of every
kind, launcher code of other versions, orphan side files, planted entries."""

from __future__ import annotations

import os
import re
import stat

from launcher.cache import locks
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
from launcher.cache.removal import (
    DELETABLE_PREFIXES,
    IN_USE,
    SIDE_SUFFIXES,
    GcReport,
    Item,
    delete,
    move_to_trash,
    remove_in_use_guarded,
    unlink_quietly,
)
from launcher.cache.root import owned_dir_problem
from launcher.cache.tree import remove_tree, tree_size

PIN_NAME_RE = re.compile(r"^sha256-[0-9a-f]{64}$")
LOCK_FILE_RE = re.compile(r"^(sha256-[0-9a-f]{64})\.(?:use\.lock|extract\.lock|labels)$")
LEGACY_WORK_RE = re.compile(r"\.tmp-[0-9]+$")


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


def sweep_planted_side_files(layout: Layout, report: GcReport) -> None:
    """Remove lock and label files that are not regular files (a symlink, a FIFO, a
    directory someone planted): every later open would refuse them. Never followed."""
    for parent in (layout.bundles, layout.code, layout.vendor):
        if not os.path.lexists(parent):
            continue
        check_level(parent, "cache directory")
        for name in sorted(os.listdir(parent)):
            if not name.endswith(SIDE_SUFFIXES):
                continue
            path = os.path.join(parent, name)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISREG(mode):
                continue
            if not report.dry_run:
                remove_tree(path, ignore_errors=True)
            report.leftovers.append(Item(name, "not a regular file"))


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
    if not 0 < pid < 1 << 22:  # PID_MAX_LIMIT: no process has it
        return False
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
    if not os.path.lexists(layout.vendor):
        return
    check_level(layout.vendor, "cache directory")
    names = sorted(n for n in os.listdir(layout.vendor) if not n.startswith(DELETABLE_PREFIXES))
    if not names:
        return
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
