"""Which changed files are too large to review, found before any diff reads them.

``git diff-tree`` lists the changed files without reading a blob; ``cat-file
--batch-check`` gives every blob's size; only a blob larger than MAX_FILE_LINES bytes can
have more lines than that, so only those are read (streamed, counted, not kept). A file
with a blob over MAX_FILE_BYTES or MAX_FILE_LINES on either side is too large: git's diff
would cost memory by the line on each side (about 45 bytes a line, measured).
"""

from __future__ import annotations

from collections.abc import Callable

from auto_review_gateway.core.model import EXIT_CLONE, FileChange, ReviewError
from auto_review_gateway.review import gitproc
from auto_review_gateway.review.boundedread import Reader
from auto_review_gateway.review.budgets import (
    MAX_FILE_BYTES,
    MAX_FILE_LINES,
    MAX_FILES,
    MAX_RECORD_BYTES,
)

Command = Callable[..., list[str]]  # git arguments -> the whole command line
_BLOB_MODES = (b"100644", b"100755", b"120000")
_STATUS = {b"A": "added", b"D": "deleted"}


def oversized(
    cmd: Command, env: dict[str, str], merge_base: str, head: str
) -> list[tuple[FileChange, bytes]]:
    """The changed files with a blob over a file cap (MAX_FILE_BYTES, MAX_FILE_LINES)
    on either side, as FileChanges with ``too_large`` set: git must not diff them.

    Found from ``diff-tree`` (no renames, no content read) and the objects' sizes;
    only blobs too big to be under the line cap by their size are read, to count
    their lines. At most MAX_FILES changed files are looked at.
    """
    changed = _changed(cmd, env, merge_base, head)
    sides = [(mode, oid) for entry in changed for mode, oid in (entry[0:2], entry[2:4])]
    blobs = {oid for mode, oid in sides if mode in _BLOB_MODES and oid.strip(b"0")}
    sizes = _object_sizes(cmd, env, sorted(blobs))
    dense = sorted(o for o, n in sizes.items() if MAX_FILE_LINES < n <= MAX_FILE_BYTES)
    lines = _line_counts(cmd, env, dense) if dense else {}
    found = []
    for _old_mode, old_oid, _new_mode, new_oid, status, raw in changed:
        big = [sizes.get(o, 0) for o in (old_oid, new_oid)]
        if max(big) <= MAX_FILE_BYTES and all(
            lines.get(o, 0) <= MAX_FILE_LINES for o in (old_oid, new_oid)
        ):
            continue
        path = raw.decode("utf-8", errors="replace")
        change = FileChange(path, path, _STATUS.get(status, "modified"), too_large=max(big))
        change.size = sizes.get(new_oid, 0) if status != b"D" else 0
        found.append((change, raw))
    return found


def _changed(
    cmd: Command, env: dict[str, str], merge_base: str, head: str
) -> list[tuple[bytes, ...]]:
    """(old mode, old oid, new mode, new oid, status, path) of each changed file."""
    tree_diff = cmd("diff-tree", "-r", "-z", "--no-renames", "--no-abbrev",
                    "--end-of-options", merge_base, head)  # fmt: skip
    out: list[tuple[bytes, ...]] = []
    with gitproc.stream(tree_diff, env, "diff-tree") as running:
        reader = Reader(running)
        while len(out) < MAX_FILES and (meta := reader.record(200, b"\0")) is not None:
            name = reader.record(MAX_RECORD_BYTES, b"\0")
            if name is None:
                break
            path, whole = name
            if not whole:  # a path too long for a sane repository: not looked at
                reader.skip_record(b"\0")
                continue
            fields = meta[0].lstrip(b":").split(b" ")
            if len(fields) == 5:
                old_mode, new_mode, old_oid, new_oid, status = fields
                out.append((old_mode, old_oid, new_mode, new_oid, status[:1], path))
    return out


def _object_sizes(cmd: Command, env: dict[str, str], oids: list[bytes]) -> dict[bytes, int]:
    """Sizes of the objects ``oids`` (missing ones left out), with one git process."""
    if not oids:
        return {}
    text = b"".join(oid + b"\n" for oid in oids)
    check = cmd("cat-file", "--batch-check=%(objectname) %(objectsize)")
    proc = gitproc.run(check, env, "cat-file", input=text)
    if proc.returncode != 0:
        raise ReviewError(f"git cat-file failed: {gitproc.last_line(proc.stderr)}", EXIT_CLONE)
    sizes = {}
    for line in proc.stdout.splitlines():
        oid, _, size = line.partition(b" ")
        if size.isdigit():
            sizes[oid] = int(size)
    return sizes


def _line_counts(cmd: Command, env: dict[str, str], oids: list[bytes]) -> dict[bytes, int]:
    """Lines of each blob of ``oids`` (each at most MAX_FILE_BYTES), read as a stream."""
    counts = {}
    text = b"".join(oid + b"\n" for oid in oids)
    with gitproc.stream(cmd("cat-file", "--batch"), env, "cat-file", input=text) as running:
        reader = Reader(running)
        while (header := reader.record(200)) is not None:
            oid, _kind, size = [*header[0].split(b" "), b"", b""][:3]
            if not size.isdigit():
                continue  # "<oid> missing"
            newlines, last = reader.count(int(size), 10)
            counts[oid] = newlines + (last not in (-1, 10))
            reader.skip_record()
    return counts
