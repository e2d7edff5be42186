"""`auto-review cache ...`: prepare, path, list, gc, clear, verify, pin, unpin.

The verbs that name one version (verify, pin, unpin) are in launcher.cli.cacheversion.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from launcher.cache import gc, inventory
from launcher.cache.paths import PREPARE_HINT, Layout, existing_layout, map_os_error
from launcher.cache.root import cache_root
from launcher.cli.cacheversion import cmd_pin, cmd_unpin, cmd_verify
from launcher.errors import ExitCode, UsageError

MB = 1e6


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
    """Unpack the embedded (or pinned) version now; print its directory."""
    from launcher.cli.prepare import prepare

    return prepare(quiet)


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
