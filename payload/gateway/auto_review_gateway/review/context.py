"""Build the ReviewContext: the merge-base diff within the review's budgets, ignored
paths pruned.

The diff is read from git as it comes (``diffstream``): what is kept is the budget,
whatever the PR holds.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from fnmatch import fnmatchcase
from typing import Protocol

from auto_review_gateway.core.model import RepoConfig, ReviewContext
from auto_review_gateway.review import diffstream
from auto_review_gateway.review.boundedread import Chunks
from auto_review_gateway.review.budgets import DEFAULT_MAX_DIFF_BYTES

DEFAULT_MAX_BYTES = DEFAULT_MAX_DIFF_BYTES


class Source(Protocol):
    """What build() needs of a repository (gitrepo.Repo provides it)."""

    def merge_base(self) -> str: ...
    def open_diff(self, merge_base: str, head: str) -> AbstractContextManager[Chunks]: ...
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
) -> ReviewContext:
    """The context of the change from the merge base of base and head to head.

    Files matching ``config.ignored_paths`` are left out (listed in ``skipped``).
    Files are kept whole, in diff order, while their hunk lines fit in ``max_bytes``
    (and the review's line cap); the first that does not fit keeps what fits of its
    hunks, every later file is listed without hunks (both marked truncated).
    """
    merge_base = repo.merge_base()

    def skip(path: str) -> bool:
        return ignored(path, config.ignored_paths)

    with repo.open_diff(merge_base, head_sha) as diff:
        read = diffstream.read(diff, max_bytes, skip)
    files, skipped = read.files, read.skipped
    present = [c.path for c in files if c.status != "deleted"]
    sizes = repo.sizes_at(head_sha, present) if present else {}
    for change in files:
        change.size = sizes.get(change.path, 0) if change.status != "deleted" else 0
    return ReviewContext(
        base=base_sha,
        head=head_sha,
        merge_base=merge_base,
        files=files,
        config=config,
        truncated=read.truncated,
        skipped=skipped,
    )
