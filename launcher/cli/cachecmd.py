"""`auto-review cache ...`: prepare, path, list, gc, clear, verify, pin, unpin."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from launcher.cache import gc, inventory, locks, warm
from launcher.cache.inventory import Version
from launcher.cache.paths import (
    PREPARE_HINT,
    Layout,
    ensure_level,
    existing_layout,
    map_os_error,
    open_layout,
    write_new_file,
)
from launcher.cache.root import cache_root
from launcher.errors import ExitCode, PayloadCorrupt, PinNotFound, UsageError

MB = 1e6
MAX_PROBLEMS_SHOWN = 50


def run(args: argparse.Namespace, quiet: bool) -> int:
    """Run one `cache` verb; returns the exit code (errors are raised as LauncherError)."""
    handlers: dict[str, Callable[[argparse.Namespace, bool], int]] = {
        "prepare": cmd_prepare,
        "path": cmd_path,
        "list": cmd_list,
        "gc": cmd_gc,
        "clear": cmd_clear,
        "verify": cmd_verify,
        "pin": cmd_pin,
        "unpin": cmd_unpin,
    }
    try:
        return handlers[args.verb](args, quiet)
    except OSError as exc:
        where = exc.filename or cache_root()
        raise map_os_error(exc, f"cache operation failed on {where}") from None


# --------------------------------------------------------------------------- prepare, path


def cmd_prepare(args: argparse.Namespace, quiet: bool) -> int:
    """Unpack the embedded (or pinned) version now; print its directory.

    Says on stderr when this run did the unpacking (not when it was already cached).
    """
    acquired = warm.acquire(quiet)
    acquired.release()
    if acquired.extracted and not quiet:
        label = acquired.manifest.get("version", "?")
        sys.stderr.write(f"auto-review: unpacked {label} ({acquired.digest[:19]})\n")
    print(acquired.layout.version_dir(acquired.digest))
    return ExitCode.OK


def cmd_path(args: argparse.Namespace, quiet: bool) -> int:
    """Print the cache root."""
    print(cache_root())
    return ExitCode.OK


# --------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace, quiet: bool) -> int:
    """Print the cached versions as a table, or as JSON with --json."""
    layout = existing_layout()
    rows = version_rows(layout) if layout else []
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not rows:
        print(f"no versions cached in {cache_root()} ({PREPARE_HINT} to unpack this one)")
    else:
        print_table(rows)
    return ExitCode.OK


def version_rows(layout: Layout) -> list[dict[str, Any]]:
    """One dict per cached version: version, digest, size, last_used, in_use, pinned, current."""
    own = gc.embedded_manifest()
    current = own["digest"] if own else None
    pins = gc.pinned(layout, own)
    return [
        {
            "version": v.label,
            "labels": v.labels,
            "digest": v.digest,
            "size": v.size,
            "last_used": v.last_used,
            "in_use": inventory.is_in_use(layout, v.digest),
            "pinned": v.digest in pins,
            "current": v.digest == current,
            "path": v.path,
        }
        for v in inventory.cached_versions(layout)
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    """Aligned columns for `cache list`."""
    now = time.time()
    header = ("VERSION", "DIGEST", "SIZE", "LAST USED", "IN USE", "PINNED", "CURRENT")
    lines = [header] + [
        (
            ", ".join(r["labels"]),
            r["digest"][:19],
            f"{r['size'] / MB:.1f} MB",
            ago(now - r["last_used"]),
            yes(r["in_use"]),
            yes(r["pinned"]),
            yes(r["current"]),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def ago(seconds: float) -> str:
    """'just now', '3m ago', '5h ago', '2d ago'."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def yes(flag: bool) -> str:
    return "yes" if flag else "-"


# --------------------------------------------------------------------------- gc, clear


def cmd_gc(args: argparse.Namespace, quiet: bool) -> int:
    """Remove stale versions; print what was removed and what was kept, and why."""
    if args.keep < 0:
        raise UsageError(f"--keep must be 0 or more, not {args.keep}", "see: auto-review --help")
    if not math.isfinite(args.older_than) or args.older_than < 0:
        raise UsageError(
            f"--older-than must be a number of days >= 0, not {args.older_than}",
            "see: auto-review --help",
        )
    layout = existing_layout()
    if layout is None:
        print(f"nothing to collect: no cache in {cache_root()}")
        return ExitCode.OK
    own = gc.embedded_manifest()
    report = gc.collect(
        layout,
        current=own["digest"] if own else None,
        keep=args.keep,
        older_than_days=args.older_than,
        dry_run=args.dry_run,
    )
    if report.skipped:
        sys.stderr.write(f"auto-review: cache gc skipped: {report.skipped} -- try again later\n")
        return ExitCode.IN_USE
    print_report(report, kept_word="kept")
    return ExitCode.OK


def cmd_clear(args: argparse.Namespace, quiet: bool) -> int:
    """Remove everything not in use; name what was skipped. IN_USE if anything was."""
    layout = existing_layout()
    if layout is None:
        print(f"nothing to clear: no cache in {cache_root()}")
        return ExitCode.OK
    report = gc.clear(layout, dry_run=args.dry_run)
    print_report(report, kept_word="skipped")
    if report.any_in_use:
        sys.stderr.write(
            "auto-review: some versions were skipped because they are in use"
            " -- stop the running instances and run `auto-review cache clear` again\n"
        )
        return ExitCode.IN_USE
    return ExitCode.OK


def print_report(report: gc.GcReport, kept_word: str) -> None:
    """One line per removed/kept item with its reason, then the total."""
    removed = "would remove" if report.dry_run else "removed"
    for item in report.removed:
        print(f"{removed} {item.title}, {item.size / MB:.1f} MB: {item.reason}")
    for item in report.leftovers:
        print(f"{removed} {item.title}, {item.size / MB:.1f} MB: {item.reason}")
    for item in report.unpinned:
        print(f"{'would unpin' if report.dry_run else 'unpinned'} {item.title}")
    for item in report.kept:
        print(f"{kept_word} {item.title}: {item.reason}")
    if not (report.removed or report.leftovers):
        print("nothing to remove")
    else:
        print(f"{'would free' if report.dry_run else 'freed'} {report.freed / MB:.1f} MB")


# --------------------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace, quiet: bool) -> int:
    """Re-hash an unpacked version against its files.tsv; PayloadCorrupt on any mismatch."""
    layout, version = cached_version(args.version)
    fd = locks.hold(layout.use_lock(version.digest), shared=True)  # GC cannot remove it now
    try:
        if not os.path.exists(layout.marker(version.digest)):
            raise not_cached(version.label, version.digest)
        from launcher.cache import verify  # hashes and walks: not for the other verbs

        result = verify.verify_version(version.path, version.manifest.get("files_digest"))
    finally:
        os.close(fd)
    name = version.title
    if result.problems:
        for problem in result.problems[:MAX_PROBLEMS_SHOWN]:
            print(f"MISMATCH {problem}")
        if len(result.problems) > MAX_PROBLEMS_SHOWN:
            print(f"... and {len(result.problems) - MAX_PROBLEMS_SHOWN} more")
        raise PayloadCorrupt(
            f"{name} does not match its file list: {len(result.problems)} problem(s),"
            f" first: {result.problems[0]}",
            f"remove it (auto-review cache clear) and unpack it again ({PREPARE_HINT})",
        )
    counts = ", ".join(f"{n} {kind}s" for kind, n in sorted(result.counts.items()))
    total = sum(result.counts.values())
    print(f"OK {name}: {total} entries ({counts}), {result.hashed / MB:.1f} MB re-hashed")
    return ExitCode.OK


def cached_version(value: str | None) -> tuple[Layout, Version]:
    """The version to verify: `value` resolved, else the embedded one; it must be unpacked."""
    own = gc.embedded_manifest()
    layout = existing_layout()
    if value:
        named = resolve(value, layout or Layout(cache_root()), own)
        digest, label = named.digest, named.label
    elif own is None:
        raise UsageError("no embedded bundle here: name the version to verify", "see: cache list")
    else:
        digest, label = own["digest"], str(own["version"])
    if layout is not None:
        for version in inventory.cached_versions(layout):
            if version.digest == digest:
                return layout, version
    raise not_cached(label, digest)


def not_cached(label: str, digest: str) -> PinNotFound:
    return PinNotFound(
        f"version {label} ({digest[:19]}) is not unpacked in the cache", PREPARE_HINT
    )


# --------------------------------------------------------------------------- pin, unpin


def cmd_pin(args: argparse.Namespace, quiet: bool) -> int:
    """Keep a version from GC until `cache unpin` (or `cache clear`)."""
    layout = open_layout(create=True)
    version = resolve(args.version, layout, gc.embedded_manifest())
    name = version.title
    if version.digest in gc.persistent_pins(layout):
        print(f"{name} is already pinned")
        return ExitCode.OK
    ensure_level(layout.pins, "cache directory")
    write_new_file(layout.pin(version.digest), f"{version.digest}\t{version.label}\n".encode())
    print(f"pinned {name}")
    return ExitCode.OK


def cmd_unpin(args: argparse.Namespace, quiet: bool) -> int:
    """Let GC remove a pinned version again; PinNotFound if it is not pinned."""
    layout = existing_layout()
    pins = gc.persistent_pins(layout) if layout else set()
    digest, name = pinned_target(args.version, layout, pins)
    if layout is None or digest not in pins:
        listed = ", ".join(sorted(d[:19] for d in pins)) or "none"
        raise PinNotFound(f"{name} is not pinned", f"pinned versions: {listed}")
    gc.unlink_quietly(layout.pin(digest))
    print(f"unpinned {name}")
    return ExitCode.OK


def pinned_target(value: str, layout: Layout | None, pins: set[str]) -> tuple[str, str]:
    """(digest, display name) for `unpin`: a resolvable version, or a pin's digest prefix."""
    try:
        version = resolve(value, layout or Layout(cache_root()), gc.embedded_manifest())
    except PinNotFound:
        # The pinned version may no longer be cached (e.g. pinned from another single file).
        prefix = value.strip().lower().removeprefix("sha256:").removeprefix("sha256-")
        hits = [d for d in pins if len(prefix) >= 12 and d.split(":", 1)[1].startswith(prefix)]
        if len(hits) != 1:
            raise
        return hits[0], hits[0][:19]
    return version.digest, version.title


def resolve(value: str, layout: Layout, own: dict[str, Any] | None) -> Version:
    """inventory.resolve, with a fix that suits a `cache` argument rather than the env var."""
    try:
        return inventory.resolve(value, layout, own)
    except PinNotFound as exc:
        if exc.fix and exc.fix.startswith("set AUTO_REVIEW_BUNDLE"):
            versions = inventory.available_versions(layout, own)
            exc.fix = f"available versions: {inventory.describe(versions)}"
        raise
