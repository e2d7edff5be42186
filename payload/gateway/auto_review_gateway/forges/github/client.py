"""The forge client for GitHub (github.com or GitHub Enterprise Server), beside
:mod:`~auto_review_gateway.forges.forgejo.client`'s, behind the same
:class:`~auto_review_gateway.forges.client.ForgeClient`.

Each call names the operation id of GitHub's OpenAPI description
(``github/rest-api-description``) it follows:

* ``pulls/get`` ``GET /repos/{owner}/{repo}/pulls/{pull_number}``: head, base, state;
* ``repos/create-commit-status`` ``POST /repos/{owner}/{repo}/statuses/{sha}``
  ``{"state", "context", "description"}`` -> 201;
* ``pulls/list-files`` ``GET /repos/{owner}/{repo}/pulls/{pull_number}/files``: each
  file's ``patch``, from which the lines a review comment may sit on are read (an added
  or context line of a hunk, on the RIGHT side): GitHub refuses the *whole* review (422)
  when one comment is off the diff, so findings elsewhere go into the review's body;
* ``pulls/list-reviews``: a review of the same run (its body carries the run's marker)
  is not posted again;
* ``pulls/create-review`` ``POST /repos/{owner}/{repo}/pulls/{pull_number}/reviews``
  ``{"commit_id", "body", "event", "comments": [{"path", "line", "side", "body"}]}``;
  a REQUEST_CHANGES refused with 422 (the bot's own PR) is posted again as COMMENT;
* ``rate-limit/get`` (token) / ``apps/get-authenticated`` (App): the readiness probe.

Every request carries ``Accept: application/vnd.github+json``, ``X-GitHub-Api-Version``
and a ``User-Agent``. Rate limits (GitHub's "Rate limits for the REST API") go through
:class:`retry.Retry`: ``retry-after``, a primary limit's reset, or a secondary limit's
minute (:mod:`httperror`); :meth:`GitHub.within` a deadline, a longer wait raises the
(transient) error for the queue to retry later. Settings are :mod:`config`'s.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core import httperror, httpjson, names
from auto_review_gateway.core.escape import md_code, md_text
from auto_review_gateway.core.model import EXIT_POST, EXIT_USAGE, Review, ReviewError
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.forges.bodies import MARKER, comment_text, render_body, status_body
from auto_review_gateway.forges.client import PullInfo
from auto_review_gateway.forges.github.auth import AppAuth, TokenAuth
from auto_review_gateway.forges.github.comments import IssueComments
from auto_review_gateway.forges.github.config import (
    ASSOCIATIONS,
    DEFAULT_API_URL,
    GitHubConfig,
    configured,
    load_config,
    settings,
)

API_VERSION = "2022-11-28"
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
MAX_FILE_PAGES = 30  # pulls/list-files returns at most 3000 files, 100 a page
RETRY_ATTEMPTS = 4
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def diff_lines(patch: Any) -> set[int]:
    """RIGHT-side line numbers a review comment may sit on in one file's ``patch``."""
    lines: set[int] = set()
    if not isinstance(patch, str):
        return lines
    new = None
    for text in patch.split("\n"):
        match = _HUNK.match(text)
        if match:
            new = int(match.group(1))
            continue
        if new is None:
            continue
        if text.startswith(("+", " ")):
            lines.add(new)
            new += 1
    return lines


__all__ = [
    "ASSOCIATIONS",
    "DEFAULT_API_URL",
    "GitHub",
    "GitHubConfig",
    "configured",
    "diff_lines",
    "load_config",
    "settings",
]


def make_retry(deadline: float | None = None, *, clock: Any = None, sleep: Any = None) -> Retry:
    """Every GitHub call's retries: ``deadline`` on ``clock``; tests inject both."""
    return Retry(RETRY_ATTEMPTS, deadline=deadline, clock=clock, sleep=sleep)


class GitHub(IssueComments):
    """:class:`ForgeClient` over GitHub's REST API (see the module doc; its comments:
    :mod:`~auto_review_gateway.forges.github.comments`)."""

    headers = HEADERS

    def __init__(
        self,
        config: GitHubConfig,
        *,
        retry: Callable[[], Retry] | None = None,
        auth: TokenAuth | AppAuth | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``retry`` None: :func:`make_retry` on ``clock`` and ``sleep``; ``auth`` None:
        from the config."""
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.retry = retry or (lambda: make_retry(clock=clock, sleep=sleep))
        self.timeout = config.timeout if timeout is None else timeout
        if auth is None:
            auth = (
                AppAuth(config.app_id, config.private_key)
                if config.app_id
                else TokenAuth(config.static_token)
            )
        self.auth = auth

    def within(self, seconds: float) -> GitHub:
        """This client (settings, auth, cached tokens), its retries ``seconds`` long."""
        deadline = self.clock() + seconds
        clock, sleep = self.clock, self.sleep
        return GitHub(
            self.config,
            retry=lambda: make_retry(deadline, clock=clock, sleep=sleep),
            auth=self.auth,
            timeout=self.timeout,
            clock=clock,
            sleep=sleep,
        )

    def _once(self, method: str, url: str, token: str, body: Any) -> Any:
        try:
            return httpjson.request(
                method,
                url,
                target="forge",
                token=token,
                body=body,
                timeout=self.timeout,
                exit_code=EXIT_POST,
                headers=HEADERS,
            )[1]
        except httpjson.HttpError as exc:
            if httperror.secondary_limit(exc.status, exc.headers, exc.detail):
                exc.transient, exc.min_wait = True, httperror.SECONDARY_WAIT
            raise

    def send(self, method: str, url: str, token: str, body: Any = None) -> Any:
        """One API call as ``token``, retried on transient failures and rate limits."""
        return self.retry().call(lambda: self._once(method, url, token, body))

    def _repo(self, owner: str, repo: str) -> str:
        for name in (owner, repo):
            if not names.is_name(name):
                raise ReviewError("owner and repository names must be [A-Za-z0-9_.-]+", EXIT_USAGE)
        return f"{self.config.api_url}/repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(repo)}"

    def token_for(self, owner: str, repo: str) -> str:
        """The token to act on ``owner/repo`` with (an installation token for an App)."""
        return self.auth.token_for(owner, repo, self.send, self.config.api_url)

    def _call(
        self, owner: str, repo: str, method: str, path: str, body: Any = None, *, once: bool = False
    ) -> Any:
        """A call on ``owner/repo`` (retried unless ``once``)."""
        url = f"{self._repo(owner, repo)}{path}"
        send = self._once if once else self.send
        token = self.token_for(owner, repo)
        try:
            return send(method, url, token, body)
        except httpjson.HttpError as exc:
            # An installation token revoked before its expiry (the App's permissions
            # changed, the key was rotated): mint another, once.
            if exc.status != 401 or not isinstance(self.auth, AppAuth):
                raise
            self.auth.forget(owner, repo, token)
        return send(method, url, self.token_for(owner, repo), body)

    def probe(self, timeout: float) -> None:
        """``apps/get-authenticated`` (App) or ``rate-limit/get`` (token), once."""
        if isinstance(self.auth, AppAuth):
            url, token = f"{self.config.api_url}/app", self.auth.jwt()
        else:
            url, token = f"{self.config.api_url}/rate_limit", self.config.static_token
        httpjson.request(
            "GET",
            url,
            target="forge",
            token=token,
            timeout=timeout,
            exit_code=EXIT_POST,
            headers=HEADERS,
        )

    def get_pull_doc(self, owner: str, repo: str, number: int) -> Any:
        """``pulls/get``: GitHub's JSON as it is."""
        return self._call(owner, repo, "GET", f"/pulls/{int(number)}")

    def get_pull(self, owner: str, repo: str, number: int) -> PullInfo:
        """``pulls/get``; ReviewError when the answer is not a usable PR."""
        return PullInfo.from_doc(self.get_pull_doc(owner, repo, number), "GitHub")

    def set_status(self, owner: str, repo: str, sha: str, state: str, description: str) -> None:
        """``repos/create-commit-status`` (context ``auto_review``, description <= 140)."""
        if not names.is_sha(sha):
            raise ReviewError("the commit to set a status on is not a full hex SHA", EXIT_POST)
        body = status_body(state, description)
        body.pop("target_url", None)  # GitHub wants a URL or nothing
        self._call(owner, repo, "POST", f"/statuses/{sha.lower()}", body)

    def commentable(self, owner: str, repo: str, number: int) -> dict[str, set[int]]:
        """``pulls/list-files``: path -> the RIGHT-side lines of the diff."""
        out: dict[str, set[int]] = {}
        for page in range(1, MAX_FILE_PAGES + 1):
            path = f"/pulls/{number}/files?per_page=100&page={page}"
            files = self._call(owner, repo, "GET", path)
            if not isinstance(files, list):
                break
            for f in files:
                if isinstance(f, dict) and isinstance(f.get("filename"), str):
                    out[f["filename"]] = diff_lines(f.get("patch"))
            if len(files) < 100:
                break
        return out

    def review_body(self, review: Review, lines: dict[str, set[int]]) -> dict[str, Any]:
        """``pulls/create-review``'s body: findings on diff lines as inline comments, the
        others listed in the body (one off-diff comment would sink the whole review)."""
        inline, elsewhere = [], []
        for f in review.findings:
            text = comment_text(f)
            if f.line in lines.get(f.path, ()):
                inline.append({"path": f.path, "line": f.line, "side": "RIGHT", "body": text})
            else:
                elsewhere.append(f"- {md_code(f'{f.path}:{f.line}')} {text}")
        body = render_body(review)
        if elsewhere:
            body += "\n\nOutside the diff:\n" + "\n".join(elsewhere[:50])
        return {
            "commit_id": review.head,
            "body": body,
            "event": "REQUEST_CHANGES" if review.verdict == "fail" else "COMMENT",
            "comments": inline,
        }

    def post_review(
        self, owner: str, repo: str, index: int, review: Review, *, key: str | None = None
    ) -> Any:
        """``pulls/create-review`` once per run (``key``), COMMENT when REQUEST_CHANGES is
        refused with 422."""
        if not isinstance(index, int) or isinstance(index, bool) or index < 1:
            raise ReviewError("the pull request number must be a positive integer", EXIT_USAGE)
        mark = MARKER.format(key=key) if key else None
        body = self.review_body(review, self.commentable(owner, repo, index))
        if mark:
            body["body"] += "\n\n" + mark
        path = f"/pulls/{index}/reviews"

        def attempt() -> Any:
            # Before each try: a try whose answer was lost may have posted after all.
            posted = self._posted(owner, repo, index, mark) if mark else None
            if posted is not None:
                return posted
            try:
                return self._call(owner, repo, "POST", path, body, once=True)
            except httpjson.HttpError as exc:
                if exc.status != 422 or body["event"] != "REQUEST_CHANGES":
                    raise
                reason = md_text(httpjson.clean_text(exc.detail or "HTTP 422", 200))
            fallback = dict(body, event="COMMENT")
            fallback["body"] = (
                f"{body['body']}\n\nGitHub refused a review requesting changes ({reason}); "
                "this review is a comment instead."
            )
            return self._call(owner, repo, "POST", path, fallback, once=True)

        return self.retry().call(attempt)

    def secrets(self) -> list[str]:
        """Tokens to redact from messages."""
        held = self.auth.tokens() if isinstance(self.auth, AppAuth) else []
        return [t for t in [self.config.static_token, *held] if t]
