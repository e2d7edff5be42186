"""What the review pipeline and the service need from a forge, whichever it is:
:class:`ForgeClient` (read a PR, set a status, post a review), the pull request it reads
(:class:`PullInfo`) and the ``OWNER/REPO#N`` a caller names (:func:`parse_pr`).

:mod:`~auto_review_gateway.forges.forgejo.client` and
:mod:`~auto_review_gateway.forges.github.client` implement it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from auto_review_gateway.core import names
from auto_review_gateway.core.model import EXIT_POST, EXIT_USAGE, Review, ReviewError

_PR = re.compile(r"\A([^/#]+)/([^/#]+)#([1-9][0-9]{0,17})\Z")  # names: names.is_name


def parse_pr(pr: str) -> tuple[str, str, int]:
    """``"OWNER/REPO#N"`` -> ``(owner, repo, N)``; ReviewError(EXIT_USAGE) otherwise."""
    match = _PR.match(pr.strip()) if isinstance(pr, str) else None
    if not match or not names.is_name(match.group(1)) or not names.is_name(match.group(2)):
        raise ReviewError("--pr must look like OWNER/REPO#NUMBER", EXIT_USAGE)
    return match.group(1), match.group(2), int(match.group(3))


@dataclass(frozen=True)
class PullInfo:
    """What the pipeline needs of a pull request (``repoGetPullRequest``)."""

    head_sha: str
    base_ref: str
    state: str  # "open" | "closed"
    draft: bool
    clone_url: str | None  # base.repo.clone_url, if given
    title: str = ""
    body: str = ""  # the description

    @classmethod
    def from_doc(cls, doc: Any, forge: str) -> PullInfo:
        """From a pull request's JSON, the same shape on Forgejo (``repoGetPullRequest``)
        and GitHub (``pulls/get``); ReviewError naming `forge` when it is unusable."""
        head = doc.get("head") if isinstance(doc, dict) else None
        base = doc.get("base") if isinstance(doc, dict) else None
        sha = head.get("sha") if isinstance(head, dict) else None
        ref = base.get("ref") if isinstance(base, dict) else None
        if not names.is_sha(sha) or not isinstance(ref, str) or not ref:
            raise ReviewError(f"{forge}'s pull request answer is unusable", EXIT_POST)
        base_repo = base.get("repo") if isinstance(base, dict) else None
        clone = base_repo.get("clone_url") if isinstance(base_repo, dict) else None
        closed = doc.get("state") == "closed" or doc.get("merged") is True
        return cls(
            head_sha=sha.lower(),
            base_ref=ref,
            state="closed" if closed else "open",
            draft=doc.get("draft") is True,
            clone_url=clone if isinstance(clone, str) and clone else None,
            title=doc["title"] if isinstance(doc.get("title"), str) else "",
            body=doc["body"] if isinstance(doc.get("body"), str) else "",
        )


class ForgeClient(Protocol):
    """What the review pipeline and the service need from a forge."""

    def get_pull(self, owner: str, repo: str, number: int) -> PullInfo:
        """The pull request; HttpError (status 404 for an unknown one) on failure."""
        ...

    def set_status(self, owner: str, repo: str, sha: str, state: str, description: str) -> None:
        """Set the ``auto_review`` commit status."""
        ...

    def post_review(
        self, owner: str, repo: str, index: int, review: Review, *, key: str | None = None
    ) -> Any:
        """Post ``review`` once: a review of run ``key`` already on the PR is not posted again."""
        ...

    def secrets(self) -> list[str]:
        """The tokens no message may carry."""
        ...
