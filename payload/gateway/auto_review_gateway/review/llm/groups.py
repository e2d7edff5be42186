"""A large diff cut into review groups: each group is one model call, under a byte budget.

The budget is the call's share of the model's window (``AR_LLM_CONTEXT_TOKENS``), in
bytes of rendered diff (:func:`prompt.render_file`: what the model really reads). Files
are kept whole and in diff order, with related files next to each other where their
names say so (``src/parse.py`` beside ``tests/test_parse.py``, ``a.c`` beside ``a.h``),
and packed next-fit: a group is closed when the next file, or the next cluster of related
files, does not fit. A file larger than the budget is cut at hunk edges into parts, and a
hunk larger than the budget at line edges (each piece a hunk of its own with its own line
numbers), so every changed line of the diff is in exactly one group.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re

from auto_review_gateway.core.model import FileChange, Hunk
from auto_review_gateway.review.llm.prompt import render_file

BYTES_PER_TOKEN = 3  # code tokenises at 3-4 bytes a token: 3 errs on the side of room
_AFFIX = re.compile(r"(?:^test_|^tests?[-_.]|[-_.](?:tests?|spec)$|Tests?$|_?Spec$)")


@dataclasses.dataclass
class Group:
    """The files (or parts of files) of one model call, and their rendered size."""

    files: list[FileChange]
    size: int = 0

    @property
    def paths(self) -> list[str]:
        """The distinct paths of the group, in order."""
        return list(dict.fromkeys(change.path for change in self.files))


def tokens_to_bytes(tokens: int) -> int:
    """The bytes of text that ``tokens`` tokens hold, estimated (BYTES_PER_TOKEN)."""
    return tokens * BYTES_PER_TOKEN


def bytes_to_tokens(size: int) -> int:
    """The tokens ``size`` bytes of text cost, estimated (rounded up)."""
    return -(-size // BYTES_PER_TOKEN)


def rendered_size(change: FileChange) -> int:
    """Bytes of ``change`` as the model reads it (a blank line after each file)."""
    return len("\n".join(render_file(change)).encode("utf-8", "surrogatepass")) + 2


def relation(path: str) -> str:
    """The key under which related files cluster: the file's stem without test affixes."""
    stem = posixpath.basename(path).split(".", 1)[0]
    return _AFFIX.sub("", stem).lower() or stem.lower()


def _ordered(files: list[FileChange]) -> list[list[FileChange]]:
    """Clusters of related files, in the order their first file comes in the diff."""
    clusters: dict[str, list[FileChange]] = {}
    for change in files:
        clusters.setdefault(relation(change.path), []).append(change)
    return list(clusters.values())


def _hunk_pieces(hunk: Hunk, budget: int, overhead: int) -> list[Hunk]:
    """``hunk`` cut at line edges into hunks whose rendered lines fit ``budget``."""
    pieces: list[Hunk] = []
    old, new = hunk.old_start, hunk.new_start
    current = Hunk(old, 0, new, 0, [])
    used = overhead
    for line in hunk.lines:
        cost = len(line.encode("utf-8", "surrogatepass")) + 8
        if current.lines and used + cost > budget and line[:1] != "\\":
            pieces.append(current)
            current, used = Hunk(old, 0, new, 0, []), overhead
        current.lines.append(line)
        used += cost
        kind = line[:1]
        if kind in ("-", " ", ""):
            current.old_count += 1
            old += 1
        if kind in ("+", " ", ""):
            current.new_count += 1
            new += 1
    pieces.append(current)
    return pieces


def _part(change: FileChange, hunks: list[Hunk], last: bool) -> FileChange:
    """A copy of ``change`` with only ``hunks`` (and their added lines)."""
    added = {}
    for hunk in hunks:
        for n in range(hunk.new_start, hunk.new_start + hunk.new_count):
            if n in change.added:
                added[n] = change.added[n]
    return dataclasses.replace(
        change,
        hunks=hunks,
        added=added,
        truncated=change.truncated and last,
        no_newline_at_end=change.no_newline_at_end and last,
    )


def hunk_size(hunk: Hunk) -> int:
    """Bytes of ``hunk`` as :func:`prompt.render_file` writes it (header, then each line
    after a 6-digit number column), without building the text."""
    header = len(f"@@ -{hunk.old_start},{hunk.old_count} +{hunk.new_start},{hunk.new_count} @@")
    return header + 1 + sum(len(line.encode("utf-8", "surrogatepass")) + 8 for line in hunk.lines)


def split_file(change: FileChange, budget: int) -> list[FileChange]:
    """``change`` as parts that each fit ``budget`` (itself when it fits), cut at hunk
    edges, a hunk that alone is over the budget at line edges."""
    if rendered_size(change) <= budget or not change.hunks:
        return [change]
    header = rendered_size(dataclasses.replace(change, hunks=[], truncated=True))
    hunks: list[Hunk] = []
    for hunk in change.hunks:
        if header + hunk_size(hunk) > budget:
            hunks.extend(_hunk_pieces(hunk, budget - header, 40))
        else:
            hunks.append(hunk)
    parts: list[list[Hunk]] = [[]]
    used = header
    for hunk in hunks:
        cost = hunk_size(hunk)
        if parts[-1] and used + cost > budget:
            parts.append([])
            used = header
        parts[-1].append(hunk)
        used += cost
    return [_part(change, h, i == len(parts) - 1) for i, h in enumerate(parts)]


def plan(files: list[FileChange], budget: int) -> list[Group]:
    """The review groups of ``files``, each under ``budget`` bytes of rendered diff
    (a part of a file cut to the budget fills a group of its own)."""
    groups: list[Group] = []
    current = Group([])

    def close() -> None:
        nonlocal current
        if current.files:
            groups.append(current)
        current = Group([])

    for cluster in _ordered(files):
        sizes = [rendered_size(change) for change in cluster]
        if current.size + sum(sizes) > budget and sum(sizes) <= budget:
            close()  # the related files go to the next call together
        for change, size in zip(cluster, sizes, strict=True):
            for part in split_file(change, budget) if size > budget else [change]:
                cost = size if part is change else rendered_size(part)
                if current.files and current.size + cost > budget:
                    close()
                current.files.append(part)
                current.size += cost
    close()
    return groups
