"""What versions the cache holds, and which one AUTO_REVIEW_BUNDLE names.

Not on the warm path unless AUTO_REVIEW_BUNDLE is set.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
from typing import Any

from launcher.errors import PinNotFound
from launcher.layout import MARKER, Layout

DIGEST_RE = re.compile(r"^(?:sha256[:-])?([0-9a-f]{12,64})$")
LABEL_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")


@dataclasses.dataclass
class Version:
    """One published version in the cache (or the embedded one, not yet unpacked)."""

    digest: str
    label: str
    path: str
    size: int
    last_used: float
    cached: bool
    manifest: dict[str, Any]

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


def read_manifest(version_dir: str) -> dict[str, Any] | None:
    """The bundle.json of a published version dir, or None when it is not complete."""
    if not os.path.exists(os.path.join(version_dir, MARKER)):
        return None
    try:
        with open(os.path.join(version_dir, "bundle.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def cached_versions(layout: Layout) -> list[Version]:
    """Every complete version in the cache, newest use first."""
    out = []
    try:
        names = os.listdir(layout.bundles)
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith("sha256-") or "." in name:
            continue
        path = os.path.join(layout.bundles, name)
        manifest = read_manifest(path)
        if manifest is None or layout.dirname(str(manifest.get("digest"))) != name:
            continue  # incomplete, or its manifest names another version: never act on it
        digest = manifest["digest"]
        try:
            last_used = os.stat(layout.use_lock(digest)).st_mtime
        except FileNotFoundError:
            last_used = os.stat(os.path.join(path, MARKER)).st_mtime
        out.append(
            Version(
                digest=digest,
                label=str(manifest.get("version", "?")),
                path=path,
                size=int(manifest.get("unpacked_size", 0)),
                last_used=last_used,
                cached=True,
                manifest=manifest,
            )
        )
    out.sort(key=lambda v: v.last_used, reverse=True)
    return out


def available_versions(layout: Layout, embedded: dict[str, Any] | None) -> list[Version]:
    """Cached versions plus the embedded one (once, even if also cached)."""
    versions = cached_versions(layout)
    if embedded and all(v.digest != embedded["digest"] for v in versions):
        versions.append(
            Version(
                digest=embedded["digest"],
                label=str(embedded["version"]),
                path=layout.version_dir(embedded["digest"]),
                size=int(embedded["unpacked_size"]),
                last_used=0.0,
                cached=False,
                manifest=embedded,
            )
        )
    return versions


def describe(versions: list[Version]) -> str:
    """'0.1.0 (sha256:1234567890ab), ...' for error messages."""
    if not versions:
        return "none"
    return ", ".join(f"{v.label} ({v.digest[:19]})" for v in versions)


def resolve(value: str, layout: Layout, embedded: dict[str, Any] | None) -> Version:
    """The version named by a pin value: a label, a full digest or a >= 12-hex prefix."""
    versions = available_versions(layout, embedded)
    value = value.strip()
    fix = f"set AUTO_REVIEW_BUNDLE to one of: {describe(versions)}"
    if not value or "/" in value or "\0" in value:
        raise PinNotFound(f"AUTO_REVIEW_BUNDLE={value!r} is not a version or digest", fix)
    match = DIGEST_RE.match(value.lower())
    if match:
        prefix = match.group(1)
        hits = [v for v in versions if v.hex.startswith(prefix)]
    elif LABEL_RE.match(value):
        hits = [v for v in versions if v.label == value]
    else:
        raise PinNotFound(f"AUTO_REVIEW_BUNDLE={value!r} is not a version or digest", fix)
    if not hits:
        raise PinNotFound(f"no cached or embedded version matches {value!r}", fix)
    if len({v.digest for v in hits}) > 1:
        raise PinNotFound(
            f"{value!r} matches several versions: {describe(hits)}",
            "give more digest characters (at least 12 hex)",
        )
    return hits[0]


def is_in_use(layout: Layout, digest: str) -> bool:
    """True if a running instance holds the version's use lock (shared)."""
    try:
        fd = os.open(layout.use_lock(digest), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
