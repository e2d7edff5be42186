"""A loopback stand-in for a Forgejo/Gitea instance, which tests cannot reach.

It speaks the API paths and JSON the gateway uses, with the real status codes:

* ``POST /api/v1/repos/{owner}/{repo}/statuses/{sha}`` (``CreateStatusOption``) -> 201
  with a ``CommitStatus`` object;
* ``POST /api/v1/repos/{owner}/{repo}/pulls/{index}/reviews`` (``CreatePullReviewOptions``)
  -> 200 with a ``PullReview`` object;
* ``GET /api/v1/version`` -> 200 ``{"version": ...}`` (a cheap reachability probe);
* ``GET /api/v1/repos/{owner}/{repo}/pulls/{index}`` -> 200 with the pull request the test
  set with :meth:`FakeForgejo.set_pull` (``number``, ``state``, ``head.sha``/``ref``,
  ``base.ref``, and ``base.repo.clone_url`` when given), 404 otherwise.

Like the real API it wants ``Authorization: token <token>`` (401 ``{"message", "url"}``
otherwise; with ``token=None`` any non-empty token is accepted), validates the fields'
types and the status state / review event (422), and answers unknown paths with 404.
Every request is recorded with its headers and parsed JSON body
(:attr:`FakeForgejo.requests`, :meth:`FakeForgejo.posted`). :meth:`FakeForgejo.fail`
makes a kind of request (``"status"``, ``"review"``, ``"pull"`` or ``"version"``) answer
with an error status instead, e.g. 500 or 401. ``ssl_context`` serves HTTPS instead of HTTP.

Typical use::

    with FakeForgejo(token="s3cret") as forge:
        ...  # FORGEJO_BASE_URL=forge.base_url AR_FORGEJO_TOKEN=s3cret
        assert [s["state"] for s in forge.statuses()] == ["pending", "success"]
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import LoopbackServer

VERSION = "11.0.1+gitea-1.22.0"
MAX_BODY = 16 * 1024 * 1024
STATES = ("pending", "success", "error", "failure", "warning")
EVENTS = ("APPROVED", "REQUEST_CHANGES", "COMMENT", "")
_STATUS_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]+)\Z")
_REVIEW_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/pulls/([0-9]+)/reviews\Z")
_PULL_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/pulls/([0-9]+)\Z")
_TIME = "2024-01-01T00:00:00Z"


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    kind: str  # "status" | "review" | "version" | "pull" | "unknown"
    headers: dict[str, str]  # header names lower-cased
    json: Any  # parsed body (None when absent or not JSON)
    raw: bytes = field(repr=False, default=b"")


def _user() -> dict[str, Any]:
    """The token owner, as the API renders a User."""
    return {"id": 7, "login": "auto-review-bot", "full_name": "", "email": "bot@invalid"}


class FakeForgejo(LoopbackServer):
    """The server; use as a context manager (or call :meth:`start` / :meth:`stop`)."""

    def __init__(self, token: str | None = None, ssl_context: ssl.SSLContext | None = None):
        self.token = token
        self.requests: list[Received] = []
        self._failures: dict[str, tuple[int, Any]] = {}
        self._pulls: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__(ssl_context)

    # ------------------------------------------------------------------ lifecycle

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    # ------------------------------------------------------------------ test API

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>``, what FORGEJO_BASE_URL should be."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Alias of :attr:`base_url`."""
        return self.base_url

    def posted(self, fragment: str) -> list[tuple[str, Any]]:
        """``(path, JSON body)`` of every POST whose path contains ``fragment``, in order."""
        with self._lock:
            return [
                (r.path, r.json) for r in self.requests if r.method == "POST" and fragment in r.path
            ]

    def set_pull(
        self,
        owner: str,
        repo: str,
        number: int,
        head_sha: str,
        *,
        head_ref: str = "topic",
        base_ref: str = "main",
        state: str = "open",
        clone_url: str | None = None,
    ) -> None:
        """Make ``GET .../pulls/{number}`` answer this pull request (replacing any before)."""
        base: dict[str, Any] = {"ref": base_ref}
        if clone_url is not None:
            base["repo"] = {"name": repo, "full_name": f"{owner}/{repo}", "clone_url": clone_url}
        pull = {
            "number": number,
            "state": state,
            "head": {"sha": head_sha, "ref": head_ref},
            "base": base,
        }
        with self._lock:
            self._pulls[(owner, repo, number)] = pull

    def _pull(self, owner: str, repo: str, number: int) -> dict[str, Any] | None:
        with self._lock:
            return self._pulls.get((owner, repo, number))

    def fail(self, kind: str, status: int = 500, body: Any = None) -> None:
        """Answer every later ``kind`` request ("status", "review", "pull" or "version")
        with ``status``."""
        if body is None:
            body = {"message": f"fake: {kind} failed", "url": "https://forge.invalid/api/swagger"}
        with self._lock:
            self._failures[kind] = (status, body)

    def recover(self, kind: str) -> None:
        """Undo :meth:`fail` for ``kind``."""
        with self._lock:
            self._failures.pop(kind, None)

    def of_kind(self, kind: str) -> list[Received]:
        """The recorded requests of one kind, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.kind == kind]

    def statuses(self) -> list[Any]:
        """The JSON bodies of the status requests, in order (failed ones included)."""
        return [r.json for r in self.of_kind("status")]

    def reviews(self) -> list[Any]:
        """The JSON bodies of the review requests, in order (failed ones included)."""
        return [r.json for r in self.of_kind("review")]

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme != "token" or not value:
            return False
        return self.token is None or value == self.token

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def _failure(self, kind: str) -> tuple[int, Any] | None:
        with self._lock:
            return self._failures.get(kind)

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)


def _api_error(message: str) -> dict[str, str]:
    """The API's error object."""
    return {"message": message, "url": "https://forge.invalid/api/swagger"}


def _check_status(doc: Any) -> str | None:
    """Why a CreateStatusOption body would be refused (None if it is fine)."""
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    for key in ("state", "context", "description", "target_url"):
        if key in doc and not isinstance(doc[key], str):
            return f"{key} must be a string"
    if doc.get("state") not in STATES:
        return f"invalid state {doc.get('state')!r}"
    return None


def _check_review(doc: Any) -> str | None:
    """Why a CreatePullReviewOptions body would be refused (None if it is fine)."""
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    for key in ("body", "event", "commit_id"):
        if key in doc and not isinstance(doc[key], str):
            return f"{key} must be a string"
    if doc.get("event", "") not in EVENTS:
        return f"unknown event {doc.get('event')!r}"
    comments = doc.get("comments", [])
    if not isinstance(comments, list):
        return "comments must be an array"
    for c in comments:
        if not isinstance(c, dict) or not isinstance(c.get("path"), str):
            return "each comment needs a path"
        for key in ("new_position", "old_position"):
            if key in c and (not isinstance(c[key], int) or isinstance(c[key], bool)):
                return f"comment {key} must be an integer"
    if doc.get("event") == "REQUEST_CHANGES" and not doc.get("body") and not comments:
        return "review event REQUEST_CHANGES requires a body or a comment"
    return None


def _make_handler(fake: FakeForgejo) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``fake``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-forgejo/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, _api_error("request too large"))
                return
            raw = self.rfile.read(length) if length else b""
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            path = self.path.split("?", 1)[0]
            status_match = _STATUS_PATH.match(path)
            review_match = _REVIEW_PATH.match(path)
            pull_match = _PULL_PATH.match(path)
            if method == "POST" and status_match:
                kind = "status"
            elif method == "POST" and review_match:
                kind = "review"
            elif method == "GET" and path == "/api/v1/version":
                kind = "version"
            elif method == "GET" and pull_match:
                kind = "pull"
            else:
                kind = "unknown"
            fake._record(
                Received(
                    method=method,
                    path=self.path,
                    kind=kind,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    json=doc,
                    raw=raw,
                )
            )
            if kind == "unknown":
                self._send(404, _api_error("not found"))
                return
            if kind == "version":
                failure = fake._failure(kind)
                self._send(*(failure or (200, {"version": VERSION})))
                return
            if not fake._authorized(self.headers.get("Authorization", "")):
                self._send(401, _api_error("user does not exist or token is invalid"))
                return
            failure = fake._failure(kind)
            if failure is not None:
                self._send(*failure)
                return
            if kind == "status":
                self._status(status_match, doc)
            elif kind == "pull":
                assert pull_match is not None
                owner, repo, index = pull_match.groups()
                pull = fake._pull(owner, repo, int(index))
                if pull is None:
                    self._send(404, _api_error("pull request does not exist"))
                else:
                    self._send(200, pull)
            else:
                self._review(review_match, doc)

        def _status(self, match: re.Match[str] | None, doc: Any) -> None:
            assert match is not None
            problem = _check_status(doc)
            if problem:
                self._send(422, _api_error(problem))
                return
            owner, repo, sha = match.groups()
            status_id = fake._next_id()
            base = fake.base_url
            self._send(
                201,
                {
                    "id": status_id,
                    "status": doc["state"],  # the API names the state "status" in answers
                    "target_url": doc.get("target_url", ""),
                    "description": doc.get("description", ""),
                    "url": f"{base}/api/v1/repos/{owner}/{repo}/statuses/{sha}",
                    "context": doc.get("context", ""),
                    "creator": _user(),
                    "created_at": _TIME,
                    "updated_at": _TIME,
                },
            )

        def _review(self, match: re.Match[str] | None, doc: Any) -> None:
            assert match is not None
            problem = _check_review(doc)
            if problem:
                self._send(422, _api_error(problem))
                return
            owner, repo, index = match.groups()
            review_id = fake._next_id()
            base = fake.base_url
            self._send(
                200,
                {
                    "id": review_id,
                    "user": _user(),
                    "team": None,
                    "state": doc.get("event") or "PENDING",
                    "body": doc.get("body", ""),
                    "commit_id": doc.get("commit_id", ""),
                    "stale": False,
                    "official": False,
                    "dismissed": False,
                    "comments_count": len(doc.get("comments", [])),
                    "submitted_at": _TIME,
                    "updated_at": _TIME,
                    "html_url": f"{base}/{owner}/{repo}/pulls/{index}#issuecomment-{review_id}",
                    "pull_request_url": f"{base}/{owner}/{repo}/pulls/{index}",
                },
            )

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler
