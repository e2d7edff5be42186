"""`auto-review cache verify|pin|unpin [VERSION]`: the cache verbs that name one version
(a label or a digest, as `cache list` shows them).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from launcher.cache import gc, inventory, locks
from launcher.cache.inventory import Version
from launcher.cache.paths import (
    PREPARE_HINT,
    Layout,
    ensure_level,
    existing_layout,
    open_layout,
    write_new_file,
)
from launcher.cache.root import cache_root
from launcher.errors import ExitCode, PayloadCorrupt, PinNotFound, UsageError

MB = 1e6
MAX_PROBLEMS_SHOWN = 50


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
        print(f"{name} is already pinned: nothing changed")
        return ExitCode.OK
    ensure_level(layout.pins, "cache directory")
    write_new_file(layout.pin(version.digest), f"{version.digest}\t{version.label}\n".encode())
    print(f"pinned {name}")
    return ExitCode.OK


def cmd_unpin(args: argparse.Namespace, quiet: bool) -> int:
    """Let GC remove a pinned version again. Like `pin`, idempotent: a version that is
    not pinned is said so, exit 0; PinNotFound only for a name that names no version."""
    layout = existing_layout()
    pins = gc.persistent_pins(layout) if layout else set()
    digest, name = pinned_target(args.version, layout, pins)
    if layout is None or digest not in pins:
        print(f"{name} is not pinned: nothing changed")
        return ExitCode.OK
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
