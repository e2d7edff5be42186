"""Parse ``git diff`` output (unified, with ``a/`` ``b/`` prefixes) into FileChange values."""

from __future__ import annotations

import re

from auto_review_gateway.core.model import FileChange, Hunk

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def unquote(text: str) -> tuple[str, str]:
    """Split one path off the start of ``text``: (path, rest after it).

    A path starting with ``"`` is C-quoted the way git quotes names with
    special characters (``\\t``, ``\\"``, octal bytes of UTF-8); any other ends
    at the end of ``text``.
    """
    if not text.startswith('"'):
        return text, ""
    out = bytearray()
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return out.decode("utf-8", errors="replace"), text[i + 1 :]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if re.fullmatch(r"[0-3][0-7]{2}", text[i + 1 : i + 4]):
                out.append(int(text[i + 1 : i + 4], 8))
                i += 4
                continue
        out += c.encode()
        i += 1
    raise ValueError(f"unterminated quoted path: {text!r}")


def _strip_prefix(path: str) -> str:
    return path[2:] if path.startswith(("a/", "b/")) else path


def _header_paths(rest: str) -> tuple[str, str]:
    """The old and new paths of ``diff --git <rest>``."""
    if rest.startswith('"'):
        old, tail = unquote(rest)
        new, _ = unquote(tail[1:])
        return _strip_prefix(old), _strip_prefix(new)
    # Unquoted "a/P b/Q": when P == Q (anything but a rename) the split is the middle.
    half = (len(rest) - 1) // 2
    if len(rest) % 2 == 1 and rest[half] == " " and rest[2:half] == rest[half + 3 :]:
        return rest[2:half], rest[half + 3 :]
    if rest.endswith('"'):  # only the new name is quoted (an unquoted one holds no '"')
        cut = rest.find(' "')
        new, _ = unquote(rest[cut + 1 :])
        return _strip_prefix(rest[:cut]), _strip_prefix(new)
    old, _, new = rest.partition(" b/")
    return _strip_prefix(old), new


def _side_path(text: str) -> str | None:
    """The path of a ``---``/``+++`` line's argument; None for /dev/null."""
    # git ends an unquoted name that contains a space with a tab (for patch(1)).
    path = unquote(text)[0] if text.startswith('"') else text.split("\t", 1)[0]
    return None if path == "/dev/null" else _strip_prefix(path)


def start(line: str) -> FileChange | None:
    """The FileChange a ``diff --git`` line begins; None for any other line."""
    if not line.startswith("diff --git "):
        return None
    old, new = _header_paths(line[len("diff --git ") :])
    return FileChange(path=new, old_path=old, status="modified")


def header(change: FileChange, line: str) -> None:
    """Apply one extended header line (modes, renames, binary, ``---``, ``+++``)."""
    if line.startswith("new file mode "):
        change.status = "added"
    elif line.startswith("deleted file mode "):
        change.status = "deleted"
    elif line.startswith("rename from "):
        change.old_path, _ = unquote(line[len("rename from ") :])
        change.status = "renamed"
    elif line.startswith("rename to "):
        change.path, _ = unquote(line[len("rename to ") :])
        change.status = "renamed"
    elif line.startswith("Binary files ") and line.endswith(" differ"):
        change.binary = True
    elif line.startswith("--- "):
        side = _side_path(line[4:])
        if side is not None:
            change.old_path = side
    elif line.startswith("+++ "):
        side = _side_path(line[4:])
        if side is not None:
            change.path = side


def finish(change: FileChange) -> None:
    """Settle ``change`` once its last line is read (a deleted file keeps its old path)."""
    if change.status == "deleted":
        change.path = change.old_path


class HunkReader:
    """The lines of one hunk, taken one at a time; its header's counts say where it ends.

    The counts, not the prefixes, end the hunk: a context line can be empty
    (diff.suppressBlankEmpty) and any text can follow a hunk's last line.
    """

    def __init__(self, line: str, change: FileChange) -> None:
        """Start the hunk whose header is ``line`` (ValueError if it is not one) in ``change``."""
        match = _HUNK.match(line)
        if match is None:
            raise ValueError(f"not a hunk header: {line!r}")
        old_start, old_count, new_start, new_count = (
            int(g) if g is not None else 1 for g in match.groups()
        )
        self.hunk = Hunk(old_start, old_count, new_start, new_count, [])
        change.hunks.append(self.hunk)
        self.change = change
        self.old_left, self.new_left, self.new_line = old_count, new_count, new_start
        self.kept_old = self.kept_new = 0  # lines of each side taken so far
        self._last = ""

    def wants(self, line: str) -> bool:
        """Whether ``line`` is the hunk's next line (else the hunk has ended before it)."""
        if line[:1] == "\\":
            return True
        if self.old_left <= 0 and self.new_left <= 0:
            return False
        return line[:1] in ("+", "-", " ", "")

    def take(self, line: str) -> None:
        """Add ``line``, which :meth:`wants`, to the hunk and to the file's added lines."""
        kind = line[:1]
        if kind == "\\":
            if self._last == "+":
                self.change.no_newline_at_end = True
        elif kind == "+":
            self.change.added[self.new_line] = line[1:]
            self.new_line += 1
            self.new_left -= 1
            self.kept_new += 1
        elif kind == "-":
            self.old_left -= 1
            self.kept_old += 1
        else:
            self.new_line += 1
            self.new_left -= 1
            self.old_left -= 1
            self.kept_new += 1
            self.kept_old += 1
        self.hunk.lines.append(line)
        self._last = kind

    def cut(self) -> None:
        """End the hunk early: its counts become those of the lines taken (none: dropped)."""
        self.hunk.old_count, self.hunk.new_count = self.kept_old, self.kept_new
        if not self.hunk.lines:
            self.change.hunks.remove(self.hunk)
        self.change.truncated = True


def parse(diff_text: str) -> list[FileChange]:
    """The files changed in ``diff_text``, with hunks and added lines by new line number.

    For a diff already in memory (small ones, tests); git's own output is read as a
    stream, within budgets, by ``diffstream``.
    """
    lines = diff_text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    changes: list[FileChange] = []
    change: FileChange | None = None
    hunk: HunkReader | None = None
    for line in lines:
        if hunk is not None and hunk.wants(line):
            hunk.take(line)
            continue
        hunk = None
        if (new := start(line)) is not None:
            change = new
            changes.append(change)
        elif change is None:
            continue
        elif _HUNK.match(line):
            hunk = HunkReader(line, change)
        else:
            header(change, line)
    for change in changes:
        finish(change)
    return changes
