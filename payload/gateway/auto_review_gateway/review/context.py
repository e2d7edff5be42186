"""Build the ReviewContext: the merge-base diff within the review's budgets, ignored
paths pruned, files over a file cap listed as too large to review.

The diff is read from git as it comes (``diffstream``): what is kept is the budget,
whatever the PR holds. Files the repository says are over a file cap (bytes or lines
of a blob, ``budgets.py``) are left out of git's diff altogether, so neither git nor
this process ever reads them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from fnmatch import fnmatchcase
from typing import Protocol

from auto_review_gateway.core.model import FileChange, RepoConfig, ReviewContext
from auto_review_gateway.review import diffstream
from auto_review_gateway.review.boundedread import Chunks
from auto_review_gateway.review.budgets import DEFAULT_MAX_DIFF_BYTES

DEFAULT_MAX_BYTES = DEFAULT_MAX_DIFF_BYTES


class Source(Protocol):
    """What build() needs of a repository (gitrepo.Repo provides it)."""

    def merge_base(self) -> str: ...
    def changed_paths(self, since: str, head: str) -> list[str]: ...
    def oversized(self, merge_base: str, head: str) -> list[FileChange]: ...
    def open_diff(
        self, merge_base: str, head: str, leave_out: list[str]
    ) -> AbstractContextManager[Chunks]: ...
    def sizes_at(self, sha: str, paths: list[str]) -> dict[str, int]: ...


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` matches a glob (``*`` crosses ``/``; ``dir/`` means all below dir)."""
    for pattern in patterns:
        if pattern.endswith("/"):
            pattern += "*"
        if fnmatchcase(path, pattern):
            return True
    return False


def build(
    repo: Source,
    base_sha: str,
    head_sha: str,
    config: RepoConfig,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    since: str | None = None,
) -> ReviewContext:
    """The context of the change from the merge base of base and head to head; with
    ``since`` (an earlier head of the PR, an ancestor of head), of the change from
    ``since`` to head, kept to the files the PR itself changes (a merge of the base
    branch into the PR brings changes that are not the PR's).

    Files matching ``config.ignored_paths`` are left out (listed in ``skipped``).
    Files are kept whole, in diff order, while their hunk lines fit in ``max_bytes``
    (and the review's line cap); the first that does not fit keeps what fits of its
    hunks, every later file is listed without hunks (both marked truncated). Files
    over a file cap are listed without hunks, ``too_large`` set to their size.
    """
    merge_base = repo.merge_base()
    start = merge_base if since is None else since
    mine = None if since is None else set(repo.changed_paths(merge_base, head_sha))

    def skip(path: str) -> bool:
        return ignored(path, config.ignored_paths)

    def leave(path: str) -> bool:
        return skip(path) or (mine is not None and path not in mine)

    big = repo.oversized(start, head_sha)
    with repo.open_diff(start, head_sha, [c.path for c in big]) as diff:
        read = diffstream.read(diff, max_bytes, leave)
    if mine is not None:  # not the PR's: neither reviewed nor listed as skipped
        read.skipped[:] = [p for p in read.skipped if p in mine]
        big = [c for c in big if c.path in mine]
    skipped = sorted(read.skipped + [c.path for c in big if skip(c.path)])
    # git lists files in path order; a stable sort puts the left-out ones in their place
    files = sorted(read.files + [c for c in big if not skip(c.path)], key=lambda c: c.path)
    present = [c.path for c in files if c.status != "deleted" and not c.too_large]
    sizes = repo.sizes_at(head_sha, present) if present else {}
    for change in files:
        if not change.too_large:
            change.size = sizes.get(change.path, 0) if change.status != "deleted" else 0
    return ReviewContext(
        base=base_sha,
        head=head_sha,
        merge_base=merge_base,
        since=since,
        files=files,
        config=config,
        truncated=read.truncated,
        skipped=skipped,
    )
