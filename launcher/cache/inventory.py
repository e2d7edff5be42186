"""What versions the cache holds, and which one AUTO_REVIEW_BUNDLE names.

Not on the warm path unless AUTO_REVIEW_BUNDLE is set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from launcher.cache import labels, locks
from launcher.cache.labels import LABEL_RE
from launcher.cache.paths import Layout, check_level, read_small_file
from launcher.cache.root import MARKER, owned_dir_problem
from launcher.errors import PinNotFound
from launcher.manifest import ManifestError, validate

DIGEST_RE = re.compile(r"^(?:sha256[:-])?([0-9a-f]{12,64})$")
MAX_MANIFEST = 1 << 20


@dataclasses.dataclass
class Version:
    """One published version in the cache (or the embedded one, not yet unpacked)."""

    digest: str
    label: str
    """The label the version was built with (its bundle.json)."""
    path: str
    size: int
    last_used: float
    cached: bool
    manifest: dict[str, Any]
    labels: list[str] = dataclasses.field(default_factory=list)
    """Every label this digest is known by (its own first)."""

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    @property
    def title(self) -> str:
        """'0.1.0 (sha256:0123456789ab)', or '0.1.0, 0.2.0 (...)' with several labels."""
        return f"{', '.join(self.labels or [self.label])} ({self.digest[:19]})"


def read_manifest(version_dir: str) -> dict[str, Any] | None:
    """The bundle.json of a published version dir, or None when it is not complete."""
    try:
        if owned_dir_problem(os.lstat(version_dir)):
            return None  # not a level of ours: never trust what it says
    except OSError:
        return None
    if not os.path.exists(os.path.join(version_dir, MARKER)):
        return None
    raw = read_small_file(os.path.join(version_dir, "bundle.json"), MAX_MANIFEST)
    try:
        manifest = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    try:
        return validate(manifest)
    except ManifestError:
        return None


def cached_versions(layout: Layout) -> list[Version]:
    """Every complete version in the cache, newest use first."""
    out = []
    if not os.path.lexists(layout.bundles):
        return []
    check_level(layout.bundles, "cache directory")
    names = os.listdir(layout.bundles)
    for name in names:
        if not name.startswith("sha256-") or "." in name:
            continue
        path = os.path.join(layout.bundles, name)
        manifest = read_manifest(path)
        if manifest is None or layout.dirname(str(manifest.get("digest"))) != name:
            continue  # incomplete, or its manifest names another version: never act on it
        digest = manifest["digest"]
        label = str(manifest.get("version", "?"))
        try:
            last_used = os.stat(layout.use_lock(digest)).st_mtime
        except FileNotFoundError:
            last_used = os.stat(os.path.join(path, MARKER)).st_mtime
        out.append(
            Version(
                digest=digest,
                label=label,
                path=path,
                size=int(manifest.get("unpacked_size", 0)),
                last_used=last_used,
                cached=True,
                manifest=manifest,
                labels=[label, *(x for x in labels.read(layout, digest) if x != label)],
            )
        )
    out.sort(key=lambda v: v.last_used, reverse=True)
    return out


def available_versions(layout: Layout, embedded: dict[str, Any] | None) -> list[Version]:
    """Cached versions plus the embedded one (once, even if also cached)."""
    versions = cached_versions(layout)
    if embedded:
        for v in versions:
            if v.digest == embedded["digest"] and str(embedded["version"]) not in v.labels:
                v.labels.append(str(embedded["version"]))
                labels.record(layout, v.digest, str(embedded["version"]))
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
                labels=[str(embedded["version"])],
            )
        )
    return versions


def describe(versions: list[Version]) -> str:
    """'0.1.0 (sha256:1234567890ab), ...' for error messages."""
    if not versions:
        return "none"
    return ", ".join(v.title for v in versions)


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
        hits = [v for v in versions if value in v.labels]
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
    return locks.is_held(layout.use_lock(digest))
