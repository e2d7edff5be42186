"""Build the ReviewContext: the merge-base diff, ignored paths pruned, a byte cap at file edges."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Protocol

from auto_review_gateway.core.model import FileChange, Hunk, RepoConfig, ReviewContext
from auto_review_gateway.review import diffparse

DEFAULT_MAX_BYTES = 256 * 1024


class Source(Protocol):
    """What build() needs of a repository (gitrepo.Repo provides it)."""

    def merge_base(self) -> str: ...
    def diff(self, merge_base: str, head: str) -> str: ...
    def sizes_at(self, sha: str, paths: list[str]) -> dict[str, int]: ...


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` matches a glob (``*`` crosses ``/``; ``dir/`` means all below dir)."""
    for pattern in patterns:
        if pattern.endswith("/"):
            pattern += "*"
        if fnmatchcase(path, pattern):
            return True
    return False


def _cost(lines: list[str]) -> int:
    return sum(len(line.encode(errors="replace")) + 1 for line in lines)


def _cut(change: FileChange, budget: int) -> None:
    """Keep the hunk lines of ``change`` that fit in ``budget`` bytes; mark it truncated."""
    kept: list[Hunk] = []
    added: dict[int, str] = {}
    no_newline = False
    for hunk in change.hunks:
        lines: list[str] = []
        old_n = new_n = 0
        line_no = hunk.new_start
        prev = ""
        for line in hunk.lines:
            size = len(line.encode(errors="replace")) + 1
            if size > budget:
                break
            budget -= size
            lines.append(line)
            kind = line[:1]
            if kind == "\\":
                no_newline = no_newline or prev == "+"
                continue
            prev = kind
            if kind == "+":
                added[line_no] = line[1:]
            if kind != "-":
                line_no += 1
                new_n += 1
            if kind != "+":
                old_n += 1
        if lines:
            kept.append(Hunk(hunk.old_start, old_n, hunk.new_start, new_n, lines))
        if len(lines) < len(hunk.lines):
            break
    change.hunks = kept
    change.added = added
    change.no_newline_at_end = no_newline
    change.truncated = True


def build(
    repo: Source,
    base_sha: str,
    head_sha: str,
    config: RepoConfig,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ReviewContext:
    """The context of the change from the merge base of base and head to head.

    Files matching ``config.ignored_paths`` are left out (listed in
    ``skipped``). Files are kept whole, in diff order, while their hunk lines
    fit in ``max_bytes``; the first that does not fit keeps what fits of its
    hunks, every later file is listed without hunks (both marked truncated).
    """
    merge_base = repo.merge_base()
    files: list[FileChange] = []
    skipped: list[str] = []
    for change in diffparse.parse(repo.diff(merge_base, head_sha)):
        if ignored(change.path, config.ignored_paths):
            skipped.append(change.path)
        else:
            files.append(change)
    present = [c.path for c in files if c.status != "deleted"]
    sizes = repo.sizes_at(head_sha, present) if present else {}
    budget = max_bytes
    capped = False
    for change in files:
        change.size = sizes.get(change.path, 0) if change.status != "deleted" else 0
        cost = sum(_cost(h.lines) for h in change.hunks)
        if not capped and cost <= budget:
            budget -= cost
            continue
        if change.hunks:
            _cut(change, 0 if capped else budget)
            capped = True
            budget = 0
    return ReviewContext(
        base=base_sha,
        head=head_sha,
        merge_base=merge_base,
        files=files,
        config=config,
        truncated=capped,
        skipped=skipped,
    )
