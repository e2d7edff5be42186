"""What the gateway remembers of one pull request between reviews: the reviews it ran
(:class:`ReviewEntry`), the findings it posted (:class:`TrackedFinding`, known by a
fingerprint that survives lines moving), its summary comment and whether it is paused
(:class:`PrState`). The job store keeps it (``jobs/history.py``); the forges render it
(``forges/summary.py``); both read these types from here.
"""

from __future__ import annotations

import dataclasses
import hashlib

KINDS = ("full", "incremental", "skipped", "paused", "disabled")


def normalised(line: str) -> str:
    """A line's text without its indentation: what a fingerprint keeps of it, so that
    moving or re-indenting the line does not make a finding new. The rest is kept as it
    is (a finding about trailing whitespace is fixed by removing it)."""
    return line.lstrip(" \t")


def fingerprint(path: str, rule: str, line_text: str) -> str:
    """The identity of a finding on a PR: its path, its rule and the normalised text of
    the line it points at (not the line number)."""
    data = "\0".join((path, rule, normalised(line_text))).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class PrKey:
    """One pull request of one forge (``forge`` names the forge, e.g. its API URL)."""

    forge: str
    owner: str
    repo: str
    number: int


@dataclasses.dataclass(frozen=True)
class TrackedFinding:
    """A finding posted on a PR: open until a later head no longer has its line."""

    fingerprint: str
    path: str
    line: int
    severity: str
    rule: str
    message: str
    state: str = "open"  # "open" | "resolved"
    job_id: int = 0  # the job that posted it


@dataclasses.dataclass(frozen=True)
class ReviewEntry:
    """One review of a PR (or a push it did not review, and why: ``kind``)."""

    job_id: int
    kind: str  # one of KINDS
    from_sha: str  # what the reviewed diff starts at (merge base, or the previous head)
    head_sha: str
    files: int = 0
    new: int = 0  # findings posted by this review
    resolved: int = 0  # earlier findings this review found fixed
    verdict: str = ""
    note: str = ""  # one line for the summary's history (why skipped, what changed)
    at: float = 0.0


@dataclasses.dataclass
class PrState:
    """Everything remembered of one PR."""

    summary_comment_id: int | None = None
    paused: bool = False
    reviews: list[ReviewEntry] = dataclasses.field(default_factory=list)  # oldest first
    findings: list[TrackedFinding] = dataclasses.field(default_factory=list)

    def last_reviewed_head(self, but: int = 0) -> str | None:
        """The head of the newest review that looked at the code (full or incremental),
        not counting job ``but``'s (a job run again is not its own predecessor)."""
        for entry in reversed(self.reviews):
            if entry.kind in ("full", "incremental") and entry.job_id != but:
                return entry.head_sha
        return None

    def open_findings(self) -> list[TrackedFinding]:
        """The posted findings not resolved yet."""
        return [f for f in self.findings if f.state == "open"]
