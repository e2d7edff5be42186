"""Every version label a digest has been seen with (sha256-<hex>.labels beside the version).

Two single files built from the same inputs with different `--version` share one
digest, so one cached version; the labels file lets either label resolve to it,
whichever file unpacked it first. A published version dir itself is immutable.
"""

from __future__ import annotations

import re

from launcher.cache.paths import Layout, read_small_file, write_new_file

LABEL_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
MAX_BYTES = 4096
MAX_LABELS = 64


def read(layout: Layout, digest: str) -> list[str]:
    """The labels recorded for `digest`, in the order they were first seen."""
    data = read_small_file(layout.labels(digest), MAX_BYTES)
    if data is None:
        return []
    out: list[str] = []
    for line in data.decode("ascii", "replace").splitlines():
        if LABEL_RE.match(line) and line not in out:
            out.append(line)
    return out[:MAX_LABELS]


def record(layout: Layout, digest: str, label: str) -> None:
    """Add `label` to the digest's labels (best effort: a cache that cannot take it
    still runs)."""
    if not LABEL_RE.match(label):
        return
    known = read(layout, digest)
    if label in known or len(known) >= MAX_LABELS:
        return
    try:
        write_new_file(layout.labels(digest), "".join(f"{x}\n" for x in [*known, label]).encode())
    except OSError:
        pass
