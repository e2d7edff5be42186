"""The review's data: what changed (context), what was found (findings), the verdict.

The verdict is derived from the findings' severities, never from reviewer text,
so nothing a repository or a model writes can turn a failing review green.
"""

from __future__ import annotations

import dataclasses

SEVERITIES = ("info", "low", "medium", "high", "critical")

# Exit codes of `review` (0: the review ran, whatever it found).
EXIT_USAGE = 2
EXIT_CLONE = 3  # could not clone / read the repository
EXIT_BAD_REF = 4  # base or head does not name a commit
EXIT_REVIEWER = 5  # the reviewer (e.g. the LLM) failed
EXIT_CONFIG = 6  # .auto_review.yaml is malformed, or a bad environment value
EXIT_POST = 7  # the review ran but posting it to the forge failed
EXIT_DATABASE = 8  # serve: the job database (AR_QUEUE_URL) cannot be used
EXIT_INTERNAL = 70  # a bug: an exception nothing expected (sysexits' EX_SOFTWARE)


class ReviewError(Exception):
    """A failure with a one-line message and the exit code that names its cause."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def severity_rank(severity: str) -> int:
    """Position in SEVERITIES (info = 0); ValueError for an unknown severity."""
    return SEVERITIES.index(severity)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem, anchored at a line of the new version of a file (1-based)."""

    path: str
    line: int
    severity: str
    rule: str
    message: str

    def __post_init__(self) -> None:
        severity_rank(self.severity)  # rejects unknown severities
        if self.line < 1:
            raise ValueError(f"line must be >= 1, not {self.line}")


@dataclasses.dataclass
class Hunk:
    """One hunk of a unified diff; `lines` keep their ' ', '+', '-' prefixes."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    lines: list[str]


@dataclasses.dataclass
class FileChange:
    """One changed file between the merge base and head."""

    path: str  # path in head ("" never: deleted files keep their old path here)
    old_path: str  # path in the merge base (== path unless renamed)
    status: str  # added | modified | deleted | renamed
    binary: bool = False
    size: int = 0  # bytes of the file in head (0 when deleted)
    hunks: list[Hunk] = dataclasses.field(default_factory=list)
    added: dict[int, str] = dataclasses.field(default_factory=dict)  # new line -> text
    truncated: bool = False  # hunks cut by the byte cap
    no_newline_at_end: bool = False  # head's last line has no final newline
    # > 0: too large to review (over a file cap, review/budgets.py), never diffed: the
    # size in bytes of its larger side
    too_large: int = 0


@dataclasses.dataclass
class RepoConfig:
    """The repository's .auto_review.yaml (validated)."""

    enabled: bool = True
    ignored_paths: list[str] = dataclasses.field(default_factory=list)  # fnmatch globs
    guidelines: str = ""
    # a PR that changes only these is not reviewed (None: repoconfig.DEFAULT_SKIP_PATHS)
    skip_paths: list[str] | None = None


@dataclasses.dataclass
class ReviewContext:
    """Everything a reviewer may look at."""

    base: str  # the base commit (sha)
    head: str  # the head commit (sha)
    merge_base: str
    files: list[FileChange]
    config: RepoConfig
    truncated: bool = False  # the diff was capped
    skipped: list[str] = dataclasses.field(default_factory=list)  # ignored paths
    since: str | None = None  # an incremental review: the earlier head the diff starts at
    # with ``since``: the whole PR's diff (capped), which a model sees as context only
    whole: ReviewContext | None = None
    # The pull request's title and description when the caller has them (untrusted text)
    title: str = ""
    description: str = ""
    # Where the head's files can be read for context (a review/gitrepo.Repo), or None
    source: object = None

    def changed_lines(self, path: str) -> set[int]:
        """New-file line numbers added or modified in `path`."""
        for change in self.files:
            if change.path == path:
                return set(change.added)
        return set()


@dataclasses.dataclass
class Review:
    """The result: findings plus the facts a reader needs to trust them."""

    base: str
    head: str
    reviewer: str  # "builtin" or "llm:<model>" (or both, joined with "+")
    findings: list[Finding]
    files_reviewed: int
    truncated: bool = False
    skipped: list[str] = dataclasses.field(default_factory=list)
    # (path, bytes) of the files too large to review: listed, not read
    too_large: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    # files the model did not review: its call cap or deadline came first
    not_reviewed: list[str] = dataclasses.field(default_factory=list)
    # findings the verifier dropped, each with its reason: shown collapsed, never posted
    dropped: list[tuple[Finding, str]] = dataclasses.field(default_factory=list)
    # the model's calls and tokens (``calls``, ``prompt_tokens``, ``completion_tokens``)
    usage: dict[str, int] = dataclasses.field(default_factory=dict)
    # path -> the model's one line on what changed in it (none without a model)
    walkthrough: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """'fail' with any high/critical finding, 'warn' with any medium, else 'pass'."""
        worst = max((severity_rank(f.severity) for f in self.findings), default=-1)
        if worst >= severity_rank("high"):
            return "fail"
        if worst >= severity_rank("medium"):
            return "warn"
        return "pass"

    @property
    def summary(self) -> str:
        """One line: verdict and counts, computed from the findings."""
        counts = {s: 0 for s in SEVERITIES}
        for f in self.findings:
            counts[f.severity] += 1
        parts = [f"{n} {s}" for s, n in reversed(counts.items()) if n]
        found = ", ".join(parts) if parts else "no findings"
        cap = " (diff capped)" if self.truncated else ""
        big = f" ({len(self.too_large)} too large to review)" if self.too_large else ""
        left = f" ({len(self.not_reviewed)} not reviewed by the model)" if self.not_reviewed else ""
        return f"{self.verdict}: {found} in {self.files_reviewed} file(s){cap}{big}{left}"
