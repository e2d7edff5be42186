"""Posting a Review to a Forgejo/Gitea pull request: a review with inline comments and
the ``auto_review`` commit status.

API (Forgejo and Gitea share it, ``/api/v1``):

* ``POST /repos/{owner}/{repo}/statuses/{sha}`` with ``CreateStatusOption``
  ``{"state", "context", "description", "target_url"}``; answers 201.
* ``POST /repos/{owner}/{repo}/pulls/{index}/reviews`` with ``CreatePullReviewOptions``
  ``{"body", "event", "commit_id", "comments": [CreatePullReviewComment]}`` where a
  comment is ``{"path", "body", "new_position"}`` (``new_position``: the line number in
  the new file; ``old_position`` would anchor it on the old side); answers 200.

Authentication is ``Authorization: token <AR_FORGEJO_TOKEN>``. The token never appears in
messages. Where results go is decided only by ``FORGEJO_BASE_URL`` and the PR the caller
names, never by anything in the review.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auto_review_gateway import httpjson
from auto_review_gateway.model import EXIT_CONFIG, EXIT_POST, EXIT_USAGE, Review, ReviewError

STATUS_CONTEXT = "auto_review"
STATES = ("pending", "success", "failure", "error")
DEFAULT_TIMEOUT = 30.0
MAX_DESCRIPTION_CHARS = 140  # what forges show of a status description

_PR = re.compile(r"\A([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)#([1-9][0-9]{0,17})\Z")
_NAME = re.compile(r"\A[A-Za-z0-9_.-]+\Z")
_SHA = re.compile(r"\A(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")  # SHA-1 and SHA-256 repositories


@dataclass(frozen=True)
class ForgejoConfig:
    """Where and as whom to post, read from the environment by :func:`load_config`."""

    api_url: str  # https://host[/prefix]/api/v1
    token: str
    timeout: float = DEFAULT_TIMEOUT

    def __repr__(self) -> str:
        # The token is never shown, even when the config object is printed or logged.
        return f"ForgejoConfig(api_url={self.api_url!r}, token='***', timeout={self.timeout!r})"


def load_config(env: Mapping[str, str] | None = None) -> ForgejoConfig:
    """``FORGEJO_BASE_URL`` and ``AR_FORGEJO_TOKEN`` from ``env`` (default: os.environ).

    The base URL may be given with or without a trailing ``/api/v1``. Raises
    ReviewError(EXIT_CONFIG) listing the missing or malformed variables by name only.
    """
    env = os.environ if env is None else env
    base = env.get("FORGEJO_BASE_URL", "").strip()
    token = env.get("AR_FORGEJO_TOKEN", "").strip()
    missing = [
        name
        for name, value in (("FORGEJO_BASE_URL", base), ("AR_FORGEJO_TOKEN", token))
        if not value
    ]
    if missing:
        raise ReviewError(f"missing environment variable(s): {', '.join(missing)}", EXIT_CONFIG)
    httpjson.check_url(base, what="FORGEJO_BASE_URL", exit_code=EXIT_CONFIG)
    if not httpjson.header_safe(token):
        raise ReviewError(
            "AR_FORGEJO_TOKEN contains characters not allowed in a header", EXIT_CONFIG
        )
    base = base.rstrip("/")
    if base.endswith("/api/v1"):
        base = base[: -len("/api/v1")]
    return ForgejoConfig(api_url=base + "/api/v1", token=token)


def parse_pr(pr: str) -> tuple[str, str, int]:
    """``"OWNER/REPO#N"`` -> ``(owner, repo, N)``; ReviewError(EXIT_USAGE) otherwise."""
    match = _PR.match(pr.strip()) if isinstance(pr, str) else None
    if not match or match.group(1) in (".", "..") or match.group(2) in (".", ".."):
        raise ReviewError("--pr must look like OWNER/REPO#NUMBER", EXIT_USAGE)
    return match.group(1), match.group(2), int(match.group(3))


def _repo_url(config: ForgejoConfig, owner: str, repo: str) -> str:
    """``<api>/repos/{owner}/{repo}`` with both names checked and quoted."""
    for name in (owner, repo):
        if not _NAME.match(name) or name in (".", ".."):
            raise ReviewError("owner and repository names must be [A-Za-z0-9_.-]+", EXIT_USAGE)
    return f"{config.api_url}/repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(repo)}"


def _post(config: ForgejoConfig, url: str, body: dict[str, Any]) -> Any:
    """POST ``body`` as JSON with the forge token; the parsed answer."""
    _status, answer = httpjson.request(
        "POST",
        url,
        token=config.token,
        auth_scheme="token",
        body=body,
        timeout=config.timeout,
        exit_code=EXIT_POST,
    )
    return answer


def status_body(state: str, description: str) -> dict[str, str]:
    """The ``CreateStatusOption`` JSON for the ``auto_review`` context."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    return {
        "state": state,
        "context": STATUS_CONTEXT,
        "description": httpjson.clean_text(description, MAX_DESCRIPTION_CHARS),
        "target_url": "",
    }


def set_status(
    owner: str,
    repo: str,
    sha: str,
    state: str,
    description: str,
    *,
    config: ForgejoConfig | None = None,
) -> None:
    """Set the ``auto_review`` commit status of ``sha`` to ``state``
    (pending | success | failure | error). Raises ReviewError(EXIT_POST) on failure."""
    config = load_config() if config is None else config
    if not _SHA.match(sha):
        raise ReviewError("the commit to set a status on is not a full hex SHA", EXIT_POST)
    _post(
        config, f"{_repo_url(config, owner, repo)}/statuses/{sha}", status_body(state, description)
    )


def _code(text: str) -> str:
    """``text`` as inline Markdown code (backticks removed, so it cannot break out)."""
    return "`" + httpjson.clean_text(text.replace("`", "'"), 200) + "`"


def render_body(review: Review) -> str:
    """The review's Markdown body: verdict and summary first, then the facts behind them."""
    lines = [
        f"### auto-review: {review.verdict}",
        "",
        review.summary,
        "",
        f"Reviewer: {_code(review.reviewer)} · base {_code(review.base[:12])} · "
        f"head {_code(review.head[:12])}",
    ]
    if review.findings:
        lines.append("")
        lines.append(f"{len(review.findings)} finding(s), shown as inline comments.")
    if review.truncated:
        lines += ["", "The diff was larger than the review limit: only part of it was reviewed."]
    if review.skipped:
        shown = ", ".join(_code(path) for path in review.skipped[:20])
        more = f" and {len(review.skipped) - 20} more" if len(review.skipped) > 20 else ""
        lines += ["", f"Skipped (ignored paths): {shown}{more}"]
    return "\n".join(lines)


def review_body(review: Review) -> dict[str, Any]:
    """The ``CreatePullReviewOptions`` JSON for ``review``: one inline comment per finding."""
    return {
        "body": render_body(review),
        # A failing review requests changes; anything else comments. Never APPROVED:
        # a bot's approval could count towards branch protection.
        "event": "REQUEST_CHANGES" if review.verdict == "fail" else "COMMENT",
        "commit_id": review.head,
        "comments": [
            {
                "path": f.path,
                "new_position": f.line,
                "body": f"**{f.severity}** {f.rule}: {f.message}",
            }
            for f in review.findings
        ],
    }


def post_review(
    owner: str, repo: str, index: int, review: Review, *, config: ForgejoConfig | None = None
) -> Any:
    """Create the review on pull request ``index``; the forge's PullReview answer.
    Raises ReviewError(EXIT_POST) on failure."""
    config = load_config() if config is None else config
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        raise ReviewError("the pull request number must be a positive integer", EXIT_USAGE)
    return _post(
        config, f"{_repo_url(config, owner, repo)}/pulls/{index}/reviews", review_body(review)
    )


class Publication:
    """One pull request's review on its way to the forge: the status is pending from
    construction, then finish() posts the review and its final status, or error() marks
    the run as failed. A bad ``pr`` (EXIT_USAGE) or missing settings (EXIT_CONFIG) are
    found before anything is sent."""

    def __init__(self, pr: str, sha: str, *, config: ForgejoConfig | None = None) -> None:
        self.owner, self.repo, self.index = parse_pr(pr)
        self.config = load_config() if config is None else config
        self.sha = sha
        try:
            self._status("pending", "auto-review is reviewing")
        except ReviewError as exc:
            self.error("auto-review could not post its review")
            raise ReviewError(
                f"posting the review to {self._name()} failed: {exc}", EXIT_POST
            ) from None

    def _name(self) -> str:
        return f"{self.owner}/{self.repo}#{self.index}"

    def _status(self, state: str, description: str) -> None:
        set_status(self.owner, self.repo, self.sha, state, description, config=self.config)

    def finish(self, review: Review) -> None:
        """Post the review, then status success (verdict pass/warn) or failure (fail)."""
        try:
            post_review(self.owner, self.repo, self.index, review, config=self.config)
            final = "failure" if review.verdict == "fail" else "success"
            self._status(final, review.summary)
        except ReviewError as exc:
            self.error("auto-review could not post its review")
            raise ReviewError(
                f"posting the review to {self._name()} failed: {exc}", EXIT_POST
            ) from None

    def error(self, description: str) -> None:
        """Status error, best effort: the failure that led here is the one to report."""
        try:
            self._status("error", description)
        except ReviewError:
            pass


def publish(review: Review, pr: str, *, config: ForgejoConfig | None = None) -> None:
    """Post ``review`` to ``pr`` (``OWNER/REPO#N``): status pending, the review, then status
    success (verdict pass/warn) or failure (verdict fail); error if posting fails."""
    Publication(pr, review.head, config=config).finish(review)
