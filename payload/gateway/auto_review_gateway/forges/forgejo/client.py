"""The forge client: Forgejo/Gitea's ``/api/v1``, reads and writes in one place.

:class:`Forgejo` implements :class:`~auto_review_gateway.forges.client.ForgeClient` (read a
PR, set a status, post a review). Every rule below names the operation of
Forgejo's swagger (``templates/swagger/v1_json.tmpl``) it follows:

* ``repoGetPullRequest`` ``GET /repos/{owner}/{repo}/pulls/{index}`` -> ``PullRequest``
  (``head.sha``, ``base.ref``, ``state``, ``draft``, ``base.repo.clone_url``);
* ``repoCreateStatus`` ``POST /repos/{owner}/{repo}/statuses/{sha}`` with
  ``CreateStatusOption`` ``{"state", "context", "description", "target_url"}`` -> 201;
* ``repoCreatePullReview`` ``POST /repos/{owner}/{repo}/pulls/{index}/reviews`` with
  ``CreatePullReviewOptions`` ``{"body", "event", "commit_id", "comments"}`` (a comment
  is ``{"path", "body", "new_position"}``) -> 200 ``PullReview``; 422 when the review is
  refused: REQUEST_CHANGES on one's own PR ("reject your own pull is not allowed") or on
  a closed one. Then the review is posted again as a COMMENT that says why.
* Forgejo creates a review as a pending one, adds the comments, then submits it; a
  failure part-way leaves the bot's PENDING review, and the next create appends to it.
  So before each try the bot's pending reviews are deleted (``repoListPullReviews``,
  ``repoDeletePullReview``, the bot being ``userGetCurrent``, which needs the token's
  ``read:user`` scope; without it nothing is deleted), and a review already submitted
  for the same run (its body carries the run's marker) is not posted again.
* ``getVersion`` ``GET /version``: the readiness probe.
* ``repoGetRepoPermissions`` ``GET /repos/{owner}/{repo}/collaborators/{collaborator}/
  permission`` -> ``RepoCollaboratorPermission`` (``permission``: none, read, write,
  admin, owner); 403 unless the token's user is an admin of the repository (or asks
  about itself), 404 for an unknown user.

Transient failures (408, 409, 429, 5xx, network errors) are retried with backoff,
honouring ``Retry-After`` (:class:`retry.Retry`). Authentication is ``Authorization:
token <AR_FORGEJO_TOKEN>``; the token never appears in messages. Where results go is
decided only by ``FORGEJO_BASE_URL`` and the PR the caller names, never by the review.

``FORGEJO_BASE_URL`` may be ``http://`` (a forge on a private network): then the
gateway warns, and plain HTTP is allowed to that host only (see ``review/gitrepo.py``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core import httpjson, names
from auto_review_gateway.core.escape import md_text
from auto_review_gateway.core.model import EXIT_POST, EXIT_USAGE, Review, ReviewError
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.forges.bodies import (
    MARKER,
    review_body,
    status_body,
)
from auto_review_gateway.forges.client import PullInfo
from auto_review_gateway.forges.forgejo.comments import IssueComments
from auto_review_gateway.forges.forgejo.config import ForgejoConfig, load_config

RETRY_ATTEMPTS = 4
MAX_REVIEW_PAGES = 20  # 1000 reviews on one PR


def _repo_url(config: ForgejoConfig, owner: str, repo: str) -> str:
    """``<api>/repos/{owner}/{repo}`` with both names checked and quoted."""
    for name in (owner, repo):
        if not names.is_name(name):
            raise ReviewError("owner and repository names must be [A-Za-z0-9_.-]+", EXIT_USAGE)
    return f"{config.api_url}/repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(repo)}"


RetryFactory = Callable[[], Retry]


def make_retry() -> Retry:
    """The retry policy of every forge call (tests replace it to never really sleep)."""
    return Retry(RETRY_ATTEMPTS)


def _default_retry() -> Retry:
    return make_retry()


def _send(
    config: ForgejoConfig,
    method: str,
    url: str,
    body: Any = None,
    *,
    retry: RetryFactory | None = _default_retry,
    timeout: float | None = None,
) -> Any:
    """One API call with the forge token, retried on transient failures; the answer."""

    def once() -> Any:
        return httpjson.request(
            method,
            url,
            target="forge",
            token=config.token,
            auth_scheme="token",
            body=body,
            timeout=config.timeout if timeout is None else timeout,
            exit_code=EXIT_POST,
        )[1]

    return once() if retry is None else retry().call(once)


def _post(config: ForgejoConfig, url: str, body: dict[str, Any]) -> Any:
    """POST ``body`` as JSON with the forge token; the parsed answer (retried)."""
    return _send(config, "POST", url, body)


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
    if not names.is_sha(sha) or sha != sha.lower():
        raise ReviewError("the commit to set a status on is not a full hex SHA", EXIT_POST)
    _post(
        config, f"{_repo_url(config, owner, repo)}/statuses/{sha}", status_body(state, description)
    )


def post_review(
    owner: str,
    repo: str,
    index: int,
    review: Review,
    *,
    config: ForgejoConfig | None = None,
    key: str | None = None,
) -> Any:
    """Create the review on pull request ``index``; the forge's PullReview answer.

    With ``key`` (one run of one job) a review of that run already on the PR is not
    posted again. Raises ReviewError(EXIT_POST) on failure."""
    config = load_config() if config is None else config
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        raise ReviewError("the pull request number must be a positive integer", EXIT_USAGE)
    return Forgejo(config).post_review(owner, repo, index, review, key=key)


class Forgejo(IssueComments):
    """:class:`ForgeClient` over Forgejo/Gitea's API (see the module doc; its comments:
    :mod:`~auto_review_gateway.forges.forgejo.comments`)."""

    def __init__(
        self,
        config: ForgejoConfig,
        *,
        retry: RetryFactory | None = _default_retry,
        timeout: float | None = None,
    ) -> None:
        """``retry`` None: one try per call; ``timeout`` bounds each (default: config's)."""
        self.config = config
        self.retry = retry
        self.timeout = timeout
        self._me: int | None = None

    def _call(self, method: str, url: str, body: Any = None) -> Any:
        return _send(self.config, method, url, body, retry=self.retry, timeout=self.timeout)

    def repo_url(self, owner: str, repo: str) -> str:
        """``<api>/repos/{owner}/{repo}``, both names checked."""
        return _repo_url(self.config, owner, repo)

    def version(self, timeout: float) -> Any:
        """``getVersion``, once, with a short timeout (a readiness probe must be quick)."""
        return _send(self.config, "GET", f"{self.config.api_url}/version", retry=None,
                     timeout=timeout)  # fmt: skip

    def get_pull_doc(self, owner: str, repo: str, number: int) -> Any:
        """``repoGetPullRequest``: the forge's JSON as it is."""
        return self._call("GET", f"{_repo_url(self.config, owner, repo)}/pulls/{int(number)}")

    def get_pull(self, owner: str, repo: str, number: int) -> PullInfo:
        """``repoGetPullRequest``; ReviewError when the answer is not a usable PR."""
        return PullInfo.from_doc(self.get_pull_doc(owner, repo, number), "the forge")

    def open_pulls(self, owner: str, repo: str, page: int, limit: int) -> list[dict[str, Any]]:
        """``repoListPullRequests``: one page (from 1) of the open pull requests, at most
        ``limit`` (the forge caps it, 50 by default), as the forge's JSON objects."""
        url = f"{_repo_url(self.config, owner, repo)}/pulls?state=open&page={int(page)}"
        doc = self._call("GET", f"{url}&limit={int(limit)}")
        return [p for p in doc if isinstance(p, dict)] if isinstance(doc, list) else []

    def set_status(self, owner: str, repo: str, sha: str, state: str, description: str) -> None:
        """``repoCreateStatus`` (retried: setting a status twice is harmless)."""
        set_status(owner, repo, sha, state, description, config=self.config)

    def permission(self, owner: str, repo: str, login: str) -> str:
        """``repoGetRepoPermissions``: what ``login`` may do in ``owner/repo`` (none, read,
        write, admin, owner; "none" for an unknown user). HttpError 403 when the token
        may not ask (its user is no admin of the repository)."""
        if not names.is_name(login):
            return "none"
        url = f"{_repo_url(self.config, owner, repo)}/collaborators/{login}/permission"
        try:
            doc = self._call("GET", url)
        except httpjson.HttpError as exc:
            if exc.status == 404:
                return "none"
            raise
        value = doc.get("permission") if isinstance(doc, dict) else None
        return value.lower() if isinstance(value, str) else "none"

    def secrets(self) -> list[str]:
        """The forge token, to redact from messages."""
        return [self.config.token] if self.config.token else []

    def _my_id(self) -> int | None:
        """The bot's user id (``userGetCurrent``), cached; None if the forge will not say."""
        if self._me is None:
            try:
                doc = self._call("GET", f"{self.config.api_url}/user")
            except httpjson.HttpError as exc:
                if exc.status in (401, 403):  # a token without the read:user scope
                    return None
                raise
            user_id = doc.get("id") if isinstance(doc, dict) else None
            self._me = user_id if isinstance(user_id, int) else None
        return self._me

    def _reviews(self, owner: str, repo: str, index: int) -> list[dict[str, Any]]:
        """``repoListPullReviews``, every page (a long PR has more than one)."""
        out: list[dict[str, Any]] = []
        for page in range(1, MAX_REVIEW_PAGES + 1):
            url = (
                f"{_repo_url(self.config, owner, repo)}/pulls/{index}/reviews?limit=50&page={page}"
            )
            doc = self._call("GET", url)
            found = [r for r in doc if isinstance(r, dict)] if isinstance(doc, list) else []
            out += found
            if len(found) < 50:
                break
        return out

    def _clear_pending(self, owner: str, repo: str, index: int, key: str | None) -> Any:
        """Delete the bot's PENDING reviews; the bot's review of run ``key``, if posted."""
        me = self._my_id()
        mark = MARKER.format(key=key) if key else None
        for review in self._reviews(owner, repo, index):
            user = review.get("user")
            if me is not None and (not isinstance(user, dict) or user.get("id") != me):
                continue  # another user's review (without the bot's id: any review)
            pending = review.get("state") == "PENDING"
            if pending and me is not None and isinstance(review.get("id"), int):
                url = f"{_repo_url(self.config, owner, repo)}/pulls/{index}/reviews/{review['id']}"
                self._call("DELETE", url)
            elif not pending and mark and mark in str(review.get("body", "")):
                return review
        return None

    def post_review(
        self, owner: str, repo: str, index: int, review: Review, *, key: str | None = None
    ) -> Any:
        """``repoCreatePullReview`` once per run, falling back to COMMENT on a 422."""
        body = review_body(review)
        if key:
            body["body"] += "\n\n" + MARKER.format(key=key)
        url = f"{_repo_url(self.config, owner, repo)}/pulls/{index}/reviews"

        def once() -> Any:
            posted = self._clear_pending(owner, repo, index, key)
            if posted is not None:
                return posted  # an earlier try got through after all
            try:
                return _send(self.config, "POST", url, body, retry=None)
            except httpjson.HttpError as exc:
                if exc.status != 422 or body["event"] != "REQUEST_CHANGES":
                    raise
                reason = md_text(httpjson.clean_text(exc.detail or "HTTP 422", 200))
            fallback = dict(body)
            fallback["event"] = "COMMENT"
            fallback["body"] = (
                f"{body['body']}\n\nThe forge refused a review requesting changes "
                f"({reason}); this review is a comment instead."
            )
            self._clear_pending(owner, repo, index, None)
            return _send(self.config, "POST", url, fallback, retry=None)

        return once() if self.retry is None else self.retry().call(once)


def publish(review: Review, pr: str, *, config: ForgejoConfig | None = None) -> None:
    """Post ``review`` to ``pr`` (``OWNER/REPO#N``): status pending, the review, then status
    success (verdict pass/warn) or failure (verdict fail); error if posting fails."""
    from auto_review_gateway.forges.publication import Publication

    config = load_config() if config is None else config
    Publication(pr, review.head, Forgejo(config)).finish(review)


__all__ = ["Forgejo", "make_retry", "post_review", "publish", "set_status"]
