"""Removing what the cache holds: one published dir at a time, only while nobody uses
it, never following a symlink; and the report of what a GC or clear run did."""

from __future__ import annotations

import dataclasses
import os

from launcher.cache import locks
from launcher.cache.paths import EXTRACT_LOCK, LABELS, TRASH_PREFIX, USE_LOCK, WORK_PREFIX, use_lock
from launcher.cache.tree import remove_tree, tree_size, warn

DELETABLE_PREFIXES = (TRASH_PREFIX, WORK_PREFIX)
SIDE_SUFFIXES = (USE_LOCK, EXTRACT_LOCK, LABELS)

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
