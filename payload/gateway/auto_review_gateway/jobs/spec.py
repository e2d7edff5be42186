"""What a job is: the request the HTTP side builds and the queue stores, independent of
how it is stored (:mod:`queue`) or run (:mod:`workers`, :mod:`forgejo_job`)."""

from __future__ import annotations

import dataclasses

from auto_review_gateway.core import names

LIMITS = {"base_ref": 255, "clone_url": 2048, "reason": 200, "delivery_id": 200}


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """What to review and why; the server builds one per webhook or CI call.

    ``head_sha`` and ``base_ref`` are empty for a forced review of "the PR's current
    head" (a re-review comment): the worker reads them from the forge when it runs, so
    that the webhook is answered without waiting for the forge.
    """

    owner: str
    repo: str
    pr_number: int
    head_sha: str
    base_ref: str
    clone_url: str
    reason: str  # e.g. "pull_request:opened", "issue_comment:re-review", "ci"
    delivery_id: str | None = None
    force: bool = False

    @property
    def pr(self) -> str:
        """``OWNER/REPO#N``, as publication.Publication wants it."""
        return f"{self.owner}/{self.repo}#{self.pr_number}"


@dataclasses.dataclass(frozen=True)
class Job:
    """A claimed job: ``attempts`` counts the claims so far, this one included (1 first)."""

    id: int
    request: JobRequest
    attempts: int


def checked(req: JobRequest) -> JobRequest:
    """``req`` with the head SHA lower-cased and an empty delivery id as None;
    ValueError naming the first bad field."""
    for name in ("owner", "repo"):
        if not names.is_name(getattr(req, name)):
            raise ValueError(f"{name} must match [A-Za-z0-9_.-]+")
    if not isinstance(req.pr_number, int) or isinstance(req.pr_number, bool) or req.pr_number < 1:
        raise ValueError("pr_number must be a positive integer")
    later = req.head_sha == "" and req.base_ref == "" and bool(req.force)
    if not later and not names.is_sha(req.head_sha):
        raise ValueError("head_sha must be a full hex commit SHA")
    for name, limit in LIMITS.items():
        value = getattr(req, name)
        if value is None and name == "delivery_id":
            continue
        if not isinstance(value, str) or len(value) > limit or "\0" in value:
            raise ValueError(f"{name} must be a string of at most {limit} characters")
        if (not value and name == "clone_url") or (not value and name == "base_ref" and not later):
            raise ValueError(f"{name} must not be empty")
    return dataclasses.replace(
        req,
        head_sha=req.head_sha.lower(),
        delivery_id=req.delivery_id or None,
        force=bool(req.force),
    )
