"""The diff of a review, read from git's output as it comes, within the review's budgets.

What is kept are the hunk lines that fit the budget (bytes and lines), in diff order:
files are kept whole while they fit; the first that does not fit keeps what fits of its
hunks and every later file is listed without hunks (both marked truncated). Hunks that
are not kept (past the budget, or of an ignored file) are skipped without being read
line by line, and at most MAX_FILES files are listed. So what this holds is the budget
plus one window of :mod:`boundedread`, however large the diff: the memory of a review
follows its budget, not the PR.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from auto_review_gateway.core.model import FileChange
from auto_review_gateway.review import diffparse
from auto_review_gateway.review.boundedread import Chunks, Reader
from auto_review_gateway.review.budgets import MAX_FILES, MAX_RECORD_BYTES, MAX_REVIEW_LINES

_NEXT_FILE = b"diff --git "


@dataclasses.dataclass
class Diff:
    """What was read of a diff: the files kept, the ignored paths, whether it was capped."""

    files: list[FileChange]
    skipped: list[str]
    truncated: bool


def _path(change: FileChange) -> str:
    """The path ``change`` will be listed under (a deleted file's is its old path)."""
    return change.old_path if change.status == "deleted" else change.path


class _Budget:
    """Bytes and lines of hunks the review may still keep."""

    def __init__(self, max_bytes: int, max_lines: int) -> None:
        self.bytes, self.lines = max_bytes, max_lines
        self.spent = False  # a line did not fit: nothing more is kept

    def take(self, cost: int) -> bool:
        if self.spent or cost > self.bytes or self.lines <= 0:
            self.spent = True
            return False
        self.bytes -= cost
        self.lines -= 1
        return True


def read(
    source: Chunks,
    max_bytes: int,
    ignored: Callable[[str], bool],
    *,
    max_lines: int = MAX_REVIEW_LINES,
    max_files: int = MAX_FILES,
) -> Diff:
    """Read the unified diff ``source`` gives (``git diff`` with ``a/``, ``b/`` prefixes).

    Files whose path ``ignored`` matches are listed in ``skipped`` and cost nothing.
    Reading stops after ``max_files`` files; a caller's git may then be killed.
    """
    reader = Reader(source)
    budget = _Budget(max_bytes, max_lines)
    out = Diff([], [], False)
    change: FileChange | None = None
    hunk: diffparse.HunkReader | None = None

    def done(finished: FileChange) -> None:
        diffparse.finish(finished)
        if ignored(finished.path):
            out.skipped.append(finished.path)
        else:
            out.files.append(finished)

    while True:
        limit = MAX_RECORD_BYTES if hunk is None else max(MAX_RECORD_BYTES, budget.bytes)
        record = reader.record(limit)
        if record is None:
            break
        raw, whole = record
        line = raw.decode("utf-8", errors="replace")
        if hunk is not None:
            if hunk.wants(line):
                if whole and budget.take(len(raw) + 1):
                    hunk.take(line)
                    continue
                budget.spent = True  # the first line that does not fit: the file ends here
                hunk.cut()
                hunk = None
                if not whole:
                    reader.skip_record()
                if not reader.skip_to(_NEXT_FILE):
                    break
                continue
            hunk = None  # the hunk has ended: this line is a header, a hunk or a file
        if not whole:
            # A header line longer than any git writes for a sane path: skip its file.
            reader.skip_record()
            if change is not None and raw.startswith(_NEXT_FILE):
                done(change)  # the long line starts the next file: this one is whole
            change = None
            out.truncated = True
            if not reader.skip_to(_NEXT_FILE):
                break
            continue
        new = diffparse.start(line)
        if new is not None:
            if change is not None:
                done(change)
            change = None
            if len(out.files) + len(out.skipped) >= max_files:
                out.truncated = True
                return out
            change = new
        elif change is None:
            continue
        elif line.startswith("@@ "):
            if budget.spent or ignored(_path(change)):
                change.truncated = budget.spent and not ignored(_path(change))
                if not reader.skip_to(_NEXT_FILE):
                    break
                continue
            try:
                hunk = diffparse.HunkReader(line, change)
            except ValueError:
                continue  # "@@ " without counts: not a hunk git wrote
        else:
            diffparse.header(change, line)
    if change is not None:
        done(change)
    out.truncated = out.truncated or budget.spent
    return out
