"""A pull request's conversation on GitHub: the comments the gateway writes (its summary,
its replies to commands) and reads back. Each call names its operation id in GitHub's
OpenAPI description:

* ``issues/create-comment`` ``POST /repos/{owner}/{repo}/issues/{issue_number}/comments``
  ``{"body"}`` -> 201;
* ``issues/update-comment`` ``PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}``
  ``{"body"}`` -> 200;
* ``issues/get-comment`` ``GET /repos/{owner}/{repo}/issues/comments/{comment_id}``
  -> 200, 404 when it is gone;
* ``issues/list-comments`` ``GET /repos/{owner}/{repo}/issues/{issue_number}/comments``
  (``per_page``, ``page``);
* who the bot is: ``users/get-authenticated`` ``GET /user`` for a token, the App's
  ``slug`` from ``apps/get-authenticated`` ``GET /app`` for an App (whose comments are
  by ``<slug>[bot]``).
"""

from __future__ import annotations

from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.model import EXIT_POST, ReviewError
from auto_review_gateway.forges.github.auth import AppAuth

MAX_COMMENT_PAGES = 10  # 1000 comments: a summary older than that is not looked for


class IssueComments:
    """Mixed into :class:`~auto_review_gateway.forges.github.client.GitHub`."""

    # The client's: a call on a repository, its auth, its settings and headers.
    _call: Any
    auth: Any
    config: Any
    timeout: float
    headers: Any
    _login: str | None = None

    def create_comment(self, owner: str, repo: str, index: int, body: str) -> int:
        """``issues/create-comment``: the new comment's id."""
        doc = self._call(owner, repo, "POST", f"/issues/{int(index)}/comments", {"body": body})
        comment_id = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(comment_id, int):
            raise ReviewError("GitHub's comment answer has no id", EXIT_POST)
        return comment_id

    def edit_comment(self, owner: str, repo: str, comment_id: int, body: str) -> None:
        """``issues/update-comment``."""
        self._call(owner, repo, "PATCH", f"/issues/comments/{int(comment_id)}", {"body": body})

    def get_comment(self, owner: str, repo: str, comment_id: int) -> dict[str, Any] | None:
        """``issues/get-comment``; None when the comment is gone."""
        try:
            doc = self._call(owner, repo, "GET", f"/issues/comments/{int(comment_id)}")
        except httpjson.HttpError as exc:
            if exc.status == 404:
                return None
            raise
        return doc if isinstance(doc, dict) else None

    def list_comments(self, owner: str, repo: str, index: int) -> list[dict[str, Any]]:
        """``issues/list-comments``, page by page."""
        out: list[dict[str, Any]] = []
        for page in range(1, MAX_COMMENT_PAGES + 1):
            path = f"/issues/{int(index)}/comments?per_page=100&page={page}"
            doc = self._call(owner, repo, "GET", path)
            if not isinstance(doc, list):
                break
            out += [c for c in doc if isinstance(c, dict)]
            if len(doc) < 100:
                break
        return out

    def _bot_login(self) -> str | None:
        if self._login is None:
            api = self.config.api_url
            if isinstance(self.auth, AppAuth):
                url, token = f"{api}/app", self.auth.jwt()
            else:
                url, token = f"{api}/user", self.config.static_token
            try:
                doc = httpjson.request("GET", url, target="forge", token=token,
                                       timeout=self.timeout, exit_code=EXIT_POST,
                                       headers=self.headers)[1]  # fmt: skip
            except httpjson.HttpError:
                return None
            if isinstance(self.auth, AppAuth):
                slug = doc.get("slug") if isinstance(doc, dict) else None
                self._login = f"{slug}[bot]" if isinstance(slug, str) and slug else None
            else:
                login = doc.get("login") if isinstance(doc, dict) else None
                self._login = login if isinstance(login, str) and login else None
        return self._login

    def _posted(self, owner: str, repo: str, number: int, mark: str) -> Any:
        """The bot's review of run ``mark`` on the PR (``pulls/list-reviews``, every page),
        or None. A review by anyone else that copies the marker is not the bot's."""
        for page in range(1, MAX_COMMENT_PAGES + 1):
            path = f"/pulls/{int(number)}/reviews?per_page=100&page={page}"
            reviews = self._call(owner, repo, "GET", path)
            reviews = (
                [r for r in reviews if isinstance(r, dict)] if isinstance(reviews, list) else []
            )
            for review in reviews:
                if mark in str(review.get("body") or "") and self.is_mine(review) is not False:
                    return review
            if len(reviews) < 100:
                break
        return None

    def is_mine(self, comment: dict[str, Any]) -> bool | None:
        """Whether the bot wrote ``comment``; None when GitHub will not say who it is."""
        me = self._bot_login()
        if me is None:
            return None
        user = comment.get("user")
        return isinstance(user, dict) and str(user.get("login", "")).lower() == me.lower()
