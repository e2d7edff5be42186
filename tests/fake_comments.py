"""The issue comments of a forge stand-in (Forgejo's and GitHub's share this store):
a pull request's conversation, which the gateway's summary and replies go to.

Request bodies are validated against the published document's own schema for the
operation (:func:`forgejo_schema`, :func:`github_schema`: read from
``../shared/specs/``), with ``jsonschema``; a body it refuses is the forge's 422. GitHub
refuses a comment body over 65536 characters ("body is too long (maximum is 65536
characters)", GitHub's REST docs on issue comments); Forgejo documents no limit.

The test side plays the people on the PR: :meth:`CommentStore.add` writes a comment as
someone else, :meth:`CommentStore.delete` removes one as a person would.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import threading
from pathlib import Path
from typing import Any

import jsonschema

SPECS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs"
GITHUB_MAX_BODY = 65536


@functools.cache
def _forgejo_doc() -> dict[str, Any]:
    text = (SPECS / "forgejo" / "v1_json.tmpl").read_text()
    return json.loads(re.sub(r"\{\{[^}]*\}\}", "", text))  # the template's Go actions


@functools.cache
def _github_doc() -> dict[str, Any]:
    return json.loads((SPECS / "github" / "api.github.com.json").read_text())


def forgejo_schema(definition: str) -> dict[str, Any]:
    """A definition of Forgejo's swagger (``CreateIssueCommentOption``...) as a schema."""
    return _forgejo_doc()["definitions"][definition]


def github_schema(path: str, method: str) -> dict[str, Any]:
    """The JSON request body schema of an operation of GitHub's OpenAPI description."""
    op = _github_doc()["paths"][path][method]
    return op["requestBody"]["content"]["application/json"]["schema"]


def refusal(schema: dict[str, Any], doc: Any) -> str | None:
    """Why ``doc`` does not validate against ``schema`` (None: it does)."""
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as exc:
        return exc.message
    return None


class CommentStore:
    """Comments by id, each on one (owner, repo, number); every edit counted."""

    def __init__(self) -> None:
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self.comments: dict[int, dict[str, Any]] = {}
        self.edits: dict[int, int] = {}

    def add(self, owner: str, repo: str, number: int, body: str, user: dict[str, Any]) -> int:
        """A comment by ``user`` (the bot, or a person the test plays); its id."""
        with self._lock:
            comment_id = next(self._ids)
            self.comments[comment_id] = {
                "id": comment_id, "body": body, "user": dict(user),
                "issue": (owner.lower(), repo.lower(), number),
                "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            }  # fmt: skip
            self.edits[comment_id] = 0
        return comment_id

    def edit(self, comment_id: int, body: str) -> dict[str, Any] | None:
        """Replace a comment's body; None when there is no such comment."""
        with self._lock:
            comment = self.comments.get(comment_id)
            if comment is None:
                return None
            comment["body"] = body
            self.edits[comment_id] += 1
            return self.json(comment)

    def get(self, comment_id: int) -> dict[str, Any] | None:
        """The comment as the API renders it, None when there is none."""
        with self._lock:
            comment = self.comments.get(comment_id)
            return None if comment is None else self.json(comment)

    def on(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        """The comments of one PR, oldest first."""
        key = (owner.lower(), repo.lower(), number)
        with self._lock:
            return [self.json(c) for c in self.comments.values() if c["issue"] == key]

    def delete(self, comment_id: int) -> None:
        """Remove a comment, as a person (or an admin) would."""
        with self._lock:
            self.comments.pop(comment_id, None)

    @staticmethod
    def json(comment: dict[str, Any]) -> dict[str, Any]:
        """A comment without the store's own keys."""
        return {k: v for k, v in comment.items() if k != "issue"}
