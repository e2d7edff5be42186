"""A pull request's conversation on Forgejo/Gitea: the comments the gateway writes (its
summary, its replies to commands) and reads back. Each call names its operation in
Forgejo's swagger (``templates/swagger/v1_json.tmpl``):

* ``issueCreateComment`` ``POST /repos/{owner}/{repo}/issues/{index}/comments``
  ``CreateIssueCommentOption`` ``{"body"}`` -> 201 ``Comment``;
* ``issueEditComment`` ``PATCH /repos/{owner}/{repo}/issues/comments/{id}``
  ``EditIssueCommentOption`` ``{"body"}`` -> 200 ``Comment`` (204 when unchanged);
* ``issueGetComment`` ``GET /repos/{owner}/{repo}/issues/comments/{id}`` -> 200
  ``Comment``, 204 or 404 when it is gone;
* ``issueGetComments`` ``GET /repos/{owner}/{repo}/issues/{index}/comments`` -> every
  comment of the PR (a pull request is an issue).

Forgejo lets a repository admin edit anyone's comment, so whose a comment is is checked
here (``user.id`` against ``userGetCurrent``) before it is edited.
"""

from __future__ import annotations

from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.model import EXIT_POST, ReviewError


class IssueComments:
    """Mixed into :class:`~auto_review_gateway.forges.forgejo.client.Forgejo`."""

    # The client's: a call with its token and retries, the bot's id, a repository's URL.
    _call: Any
    _my_id: Any
    repo_url: Any

    def _issues(self, owner: str, repo: str) -> str:
        return f"{self.repo_url(owner, repo)}/issues"

    def create_comment(self, owner: str, repo: str, index: int, body: str) -> int:
        """``issueCreateComment``: the new comment's id."""
        doc = self._call("POST", f"{self._issues(owner, repo)}/{int(index)}/comments",
                         {"body": body})  # fmt: skip
        comment_id = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(comment_id, int):
            raise ReviewError("the forge's comment answer has no id", EXIT_POST)
        return comment_id

    def edit_comment(self, owner: str, repo: str, comment_id: int, body: str) -> None:
        """``issueEditComment``."""
        url = f"{self._issues(owner, repo)}/comments/{int(comment_id)}"
        self._call("PATCH", url, {"body": body})

    def get_comment(self, owner: str, repo: str, comment_id: int) -> dict[str, Any] | None:
        """``issueGetComment``; None when the comment is gone."""
        try:
            doc = self._call("GET", f"{self._issues(owner, repo)}/comments/{int(comment_id)}")
        except httpjson.HttpError as exc:
            if exc.status == 404:
                return None
            raise
        return doc if isinstance(doc, dict) else None

    def list_comments(self, owner: str, repo: str, index: int) -> list[dict[str, Any]]:
        """``issueGetComments``: the PR's comments."""
        doc = self._call("GET", f"{self._issues(owner, repo)}/{int(index)}/comments")
        return [c for c in doc if isinstance(c, dict)] if isinstance(doc, list) else []

    def is_mine(self, comment: dict[str, Any]) -> bool | None:
        """Whether the bot wrote ``comment``; None when the forge will not say who the
        bot is (a token without ``read:user``)."""
        me = self._my_id()
        if me is None:
            return None
        user = comment.get("user")
        return isinstance(user, dict) and user.get("id") == me
