"""A loopback stand-in for a Forgejo/Gitea instance, which tests cannot reach.

It speaks the API paths and JSON the gateway uses, with the real status codes:

* ``POST /api/v1/repos/{owner}/{repo}/statuses/{sha}`` (``CreateStatusOption``) -> 201
  with a ``CommitStatus`` object;
* ``POST /api/v1/repos/{owner}/{repo}/pulls/{index}/reviews`` (``CreatePullReviewOptions``)
  -> 200 with a ``PullReview`` object;
* ``GET /api/v1/version`` -> 200 ``{"version": ...}`` (a cheap reachability probe);
* ``GET /api/v1/repos/{owner}/{repo}/pulls/{index}`` -> 200 with the pull request the test
  set with :meth:`FakeForgejo.set_pull` (``number``, ``state``, ``head.sha``/``ref``,
  ``base.ref``, and ``base.repo.clone_url`` when given), 404 otherwise;
* ``GET /api/v1/repos/{owner}/{repo}/pulls`` (``repoListPullRequests``) -> 200 with those
  pull requests of the repository, filtered by ``state`` (``open``, ``closed``, ``all``; the
  swagger's enum, anything else 422) and paged by ``page`` (from 1) and ``limit`` (at most
  50: ``routers/api/v1/utils/page.go`` ``GetListOptions`` caps it at
  ``setting.API.MaxResponseItems``, 50 by default), newest first as Forgejo's default sort.
* ``repoGetRepoPermissions`` ``GET .../collaborators/{collaborator}/permission`` -> 200
  ``RepoCollaboratorPermission`` with the permission the test set
  (:meth:`FakeForgejo.set_permission`; a user it named for no repository has ``read``),
  404 for a user never named, and 403 unless the token's user (``BOT_LOGIN``) is admin
  or owner of the repository or asks about itself (``routers/api/v1/repo/collaborators.go``
  ``GetRepoPermissions``: "Only admins can query all permissions, repo admins can query
  all repo permissions, collaborators can query only their own").

Token scopes (``scopes``, default ``("all",)``) are checked as Forgejo checks them
(:meth:`FakeForgejo.scope_refused`): 403 "token does not have at least one of required
scope(s): [write:repository]" before the route's own work; ``repoEdit``
``PATCH /repos/{owner}/{repo}`` past that check answers 404 (the stand-in edits no
repository).

Like the real API it wants ``Authorization: token <token>`` (401 ``{"message", "url"}``
otherwise; with ``token=None`` any non-empty token is accepted), validates the fields'
types and the status state / review event (422), and answers unknown paths with 404.

It refuses what Forgejo refuses; each rule names its source in Forgejo:

* ``repoCreateStatus`` on a commit the repository does not have is 404
  (``routers/api/v1/repo/status.go`` ``NewCommitStatus``: ``git.ErrNotExist`` ->
  NotFound); the stand-in knows a repository's commits from its git repository under
  ``git_root`` and the heads given to :meth:`FakeForgejo.set_pull` (:meth:`add_commit`
  adds more), and accepts any SHA for a repository it knows nothing of;
* a wrong token is 401 on every route, ``/version`` included: the API's auth middleware
  checks any token sent before routing (``routers/api/v1/api.go``);
* ``repoCreatePullReview``: REQUEST_CHANGES by the PR's author is 422 "reject your own
  pull is not allowed", APPROVED "approve your own pull is not allowed"
  (``routers/api/v1/repo/pull_review.go`` ``preparePullReviewType``); either on a closed
  PR is 422 (``services/pull/review.go`` ``SubmitReview``, ErrSubmitReviewOnClosedPR);
  COMMENT or REQUEST_CHANGES with neither body nor comments is 422 ("review event ...
  requires a body or a comment");
* a review is built as the user's PENDING review, comments added, then submitted; a
  pending review of the same user is reused (``issues_model.GetCurrentReview``), so a
  post that fails part-way (:meth:`FakeForgejo.fail_midway`) leaves comments that the
  next post appends to. ``repoListPullReviews`` lists the PR's reviews,
  ``repoDeletePullReview`` deletes one (204), ``userGetCurrent`` names the token owner.

:meth:`FakeForgejo.fail` takes ``times`` (then the request succeeds again) and
``retry_after`` (sent as ``Retry-After``); :meth:`FakeForgejo.hold` makes a kind of
request wait until :meth:`FakeForgejo.release`. With ``git_root`` the stand-in also
serves the bare repositories under it over git's smart HTTP (``git http-backend``) at
``/{owner}/{repo}.git``, token required, as Forgejo serves a private repository;
:attr:`FakeForgejo.git_redirect` (an origin) makes it answer those requests with a 302 to
the same path there instead.
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
import os
import re
import ssl
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from fake_comments import CommentStore, forgejo_schema, refusal
from hostile import redirect
from loopback import LoopbackServer, serve_git

VERSION = "11.0.1+gitea-1.22.0"
MAX_BODY = 16 * 1024 * 1024
STATES = ("pending", "success", "error", "failure", "warning")
EVENTS = ("APPROVED", "REQUEST_CHANGES", "COMMENT", "")
_STATUS_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]+)\Z")
_REVIEW_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/pulls/([0-9]+)/reviews\Z")
_PULL_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/pulls/([0-9]+)\Z")
_PULLS_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/pulls\Z")
MAX_RESPONSE_ITEMS = 50
_REVIEW_ONE = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/pulls/([0-9]+)/reviews/([0-9]+)\Z")
_HOOKS_PATH = re.compile(r"\A/api/v1/(repos/[^/]+/[^/]+|orgs/[^/]+)/hooks\Z")
_HOOK_PATH = re.compile(r"\A/api/v1/(repos/[^/]+/[^/]+|orgs/[^/]+)/hooks/([0-9]+)\Z")
_HOOK_TEST = re.compile(r"\A/api/v1/(repos/[^/]+/[^/]+)/hooks/([0-9]+)/tests\Z")
# pullHook (routers/api/v1/utils/hook.go): "pull_request" turns on the whole family
PULL_FAMILY = ("pull_request", "pull_request_assign", "pull_request_label",
               "pull_request_milestone", "pull_request_comment", "pull_request_review_approved",
               "pull_request_review_rejected", "pull_request_review_comment",
               "pull_request_sync", "pull_request_review_request")  # fmt: skip
_REPO_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)\Z")
_GIT_PATH = re.compile(r"\A/([^/]+)/([^/]+\.git)/")
_PERMISSION_PATH = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/collaborators/([^/]+)/permission\Z")
_COMMENTS = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/issues/([0-9]+)/comments\Z")
_COMMENT = re.compile(r"\A/api/v1/repos/([^/]+)/([^/]+)/issues/comments/([0-9]+)\Z")
BOT_ID = 7
BOT_LOGIN = "auto-review-bot"
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
    return {"id": BOT_ID, "login": BOT_LOGIN, "full_name": "", "email": "bot@invalid"}


class FakeForgejo(LoopbackServer):
    """The server; use as a context manager (or call :meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        git_root: str | os.PathLike[str] | None = None,
        scopes: tuple[str, ...] = ("all",),
    ):
        self.token = token
        self.scopes = scopes  # the token's scopes (see scope_refused)
        # "repos/OWNER/NAME" or "orgs/ORG" -> its hooks (each with its "_secret")
        self.hooks: dict[str, list[dict[str, Any]]] = {}
        self.deliveries: list[tuple[int, Any]] = []  # (status, answer) of test deliveries
        self.git_root = None if git_root is None else os.fspath(git_root)
        self.git_redirect: str | None = None  # an origin git requests are sent to (302)
        self.requests: list[Received] = []
        self._failures: dict[str, list[Any]] = {}
        self._midway: dict[str, int] = {}
        self._held: dict[str, threading.Event] = {}
        self._waiting: dict[str, threading.Event] = {}
        self._commits: dict[tuple[str, str], set[str]] = {}
        # (owner, repo, index) -> list of reviews, each a dict with "comments"
        self._reviews: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        self._pulls: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.comments = CommentStore()
        self._permissions: dict[tuple[str, str], dict[str, str]] = {}
        self._users: set[str] = {BOT_LOGIN}
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
        author: str = "alice",
        draft: bool = False,
        title: str = "A pull request",
        body: str = "",
    ) -> None:
        """Make ``GET .../pulls/{number}`` answer this pull request (replacing any before).
        ``author`` is the PR's poster (the bot is ``BOT_LOGIN``)."""
        base: dict[str, Any] = {"ref": base_ref}
        if clone_url is not None:
            base["repo"] = {"name": repo, "full_name": f"{owner}/{repo}", "clone_url": clone_url}
        pull = {
            "number": number,
            "title": title,
            "body": body,
            "state": state,
            "draft": draft,
            "user": {"id": BOT_ID if author == BOT_LOGIN else 1, "login": author},
            "head": {"sha": head_sha, "ref": head_ref},
            "base": base,
        }
        with self._lock:
            self._pulls[(owner, repo, number)] = pull
            self._commits.setdefault((owner, repo), set()).add(head_sha)

    def set_permission(self, owner: str, repo: str, login: str, permission: str) -> None:
        """What ``repoGetRepoPermissions`` answers for ``login`` on ``owner/repo``
        (none, read, write, admin, owner); makes ``login`` a known user."""
        with self._lock:
            self._users.add(login.lower())
            self._permissions.setdefault((owner, repo), {})[login.lower()] = permission

    def _permission(self, owner: str, repo: str, login: str) -> tuple[int, Any]:
        with self._lock:
            table = self._permissions.get((owner, repo), {})
            mine = table.get(BOT_LOGIN, "read")
            if login.lower() != BOT_LOGIN and mine not in ("admin", "owner"):
                return 403, _api_error(
                    "Only admins can query all permissions, repo admins can query all"
                    " repo permissions, collaborators can query only their own"
                )
            if login.lower() not in self._users:
                return 404, _api_error("user does not exist")
            permission = table.get(login.lower(), "read")
        return 200, {"permission": permission, "role_name": permission,
                     "user": {"id": 1, "login": login}}  # fmt: skip

    def add_commit(self, owner: str, repo: str, sha: str) -> None:
        """Make ``sha`` a commit of ``owner/repo`` (for ``repoCreateStatus``)."""
        with self._lock:
            self._commits.setdefault((owner, repo), set()).add(sha)

    def has_commit(self, owner: str, repo: str, sha: str) -> bool:
        """Whether a status may be set on ``sha`` (see the module doc)."""
        with self._lock:
            known = self._commits.get((owner, repo))
        git_dir = os.path.join(self.git_root or "", owner, f"{repo}.git")
        if self.git_root and os.path.isdir(git_dir):
            found = subprocess.run(
                ["git", "--git-dir", git_dir, "cat-file", "-e", f"{sha}^{{commit}}"],
                capture_output=True,
                env={"PATH": os.environ.get("PATH", os.defpath), "GIT_CONFIG_NOSYSTEM": "1"},
            )
            return found.returncode == 0 or (known is not None and sha in known)
        return known is None or sha in known

    def knows_repo(self, owner: str, repo: str) -> bool:
        """Whether a pull request of ``owner/repo`` was set (else: a repository the
        stand-in knows nothing of, whose issues it takes on trust)."""
        with self._lock:
            return any(k[:2] == (owner, repo) for k in self._pulls)

    def _pull(self, owner: str, repo: str, number: int) -> dict[str, Any] | None:
        with self._lock:
            return self._pulls.get((owner, repo, number))

    def fail(
        self,
        kind: str,
        status: int = 500,
        body: Any = None,
        *,
        times: int | None = None,
        retry_after: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer later ``kind`` requests ("status", "review", "pull", "version", "user",
        "reviews", "delete") with ``status``: all of them, or the next ``times``, once
        ``after`` more have succeeded. ``retry_after`` is sent as ``Retry-After``."""
        if body is None:
            body = {"message": f"fake: {kind} failed", "url": "https://forge.invalid/api/swagger"}
        with self._lock:
            self._failures[kind] = [status, body, times, retry_after, after]

    def fail_midway(self, kind: str = "review", times: int = 1) -> None:
        """The next ``times`` reviews fail with 500 after their pending review and its
        comments were stored, as a Forgejo that errs while submitting leaves them."""
        with self._lock:
            self._midway[kind] = times

    def recover(self, kind: str) -> None:
        """Undo :meth:`fail` for ``kind``."""
        with self._lock:
            self._failures.pop(kind, None)

    def hold(self, kind: str) -> None:
        """Make ``kind`` requests wait (after being recorded) until :meth:`release`."""
        with self._lock:
            self._held[kind] = threading.Event()
            self._waiting[kind] = threading.Event()

    def release(self, kind: str) -> None:
        """Let the held ``kind`` requests go on."""
        with self._lock:
            event = self._held.pop(kind, None)
        if event is not None:
            event.set()

    def wait_held(self, kind: str, timeout: float = 30) -> bool:
        """Wait until a ``kind`` request is being held."""
        with self._lock:
            waiting = self._waiting.get(kind)
        return waiting is not None and waiting.wait(timeout)

    def stop(self) -> None:
        with self._lock:
            held = list(self._held.values())
        for event in held:
            event.set()
        super().stop()

    def pull_reviews(self, owner: str, repo: str, index: int) -> list[dict[str, Any]]:
        """The reviews stored on a PR (submitted and pending), in creation order."""
        with self._lock:
            return [dict(r) for r in self._reviews.get((owner, repo, index), [])]

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

    def scope_refused(self, method: str, path: str) -> str | None:
        """The scope a request needs and the token lacks (None: none lacking), as
        ``routers/api/v1/api.go`` checks them: ``tokenRequiresScopes(category)`` on each
        route group (``/user``, ``/repos``, ``/orgs``, ``/repos/{o}/{r}/issues`` under
        ``issue``; ``/version`` none), ``read:`` for
        GET, ``write:`` for the rest; ``write:`` grants ``read:``; ``all`` grants all."""
        parts = path.split("/")
        category = {"user": "user", "repos": "repository", "orgs": "organization"}.get(
            parts[3] if len(parts) > 3 else ""
        )
        if category == "repository" and len(parts) > 6 and parts[6] == "issues":
            category = "issue"  # the issues routes are a group of their own
        if category is None or "all" in self.scopes:
            return None
        level = "read" if method == "GET" else "write"
        held = {f"write:{category}"} | ({f"read:{category}"} if level == "read" else set())
        return None if held & set(self.scopes) else f"{level}:{category}"

    def hook_call(self, kind: str, path: str, doc: Any) -> tuple[int, Any]:
        """The hook operations (see the module doc); every body checked against the
        swagger's ``CreateHookOption`` / ``EditHookOption``, every answer against ``Hook``."""
        from apidoc import forgejo_definition, problem

        match = (_HOOK_TEST if kind == "hook_test" else _HOOK_PATH).match(path)
        owner = (match or _HOOKS_PATH.match(path)).group(1)  # type: ignore[union-attr]
        with self._lock:
            hooks = self.hooks.setdefault(owner, [])
            found = [h for h in hooks if match and h["id"] == int(match.group(2))]
        if kind == "hooks":
            return 200, [self._hook_json(h) for h in hooks]
        if kind == "hook_create":
            why = problem("forgejo", forgejo_definition("CreateHookOption"), doc)
            config = (doc or {}).get("config") or {}
            # checkCreateHookOption (routers/api/v1/utils/hook.go)
            if why is None and config.get("content_type") not in ("json", "form"):
                why = "Invalid content type"
            if why is None and not config.get("url"):
                why = "Missing config option: url"
            if why is not None:
                return 422, _api_error(why)
            hook = {"id": self._next_id(), "type": doc["type"], "active": bool(doc.get("active")),
                    "branch_filter": doc.get("branch_filter", ""), "created_at": _TIME}  # fmt: skip
            self._edit_hook(hook, doc)
            with self._lock:
                hooks.append(hook)
            return 201, self._hook_json(hook)
        if not found:
            return 404, _api_error("webhook does not exist")
        if kind == "hook_edit":
            why = problem("forgejo", forgejo_definition("EditHookOption"), doc)
            if why is not None:
                return 422, _api_error(why)
            self._edit_hook(found[0], doc)
            return 200, self._hook_json(found[0])
        self._test_delivery(found[0], owner)
        return 204, None

    def _edit_hook(self, hook: dict[str, Any], doc: dict[str, Any]) -> None:
        """editHook: config keys given replace theirs; ``events`` and ``branch_filter``
        left out are reset (``push``, none), ``active`` left out is kept."""
        config = doc.get("config") or {}
        hook["url"] = config.get("url", hook.get("url", ""))
        hook["content_type"] = config.get("content_type", hook.get("content_type", "json"))
        if "secret" in config:
            hook["_secret"] = config["secret"]
        events = doc.get("events") or ["push"]
        hook["events"] = sorted(
            {e for e in events if not e.startswith("pull_request")}
            | ({"pull_request", *PULL_FAMILY} if "pull_request" in events else set())
            | {e for e in events if e in PULL_FAMILY}
        )
        hook["branch_filter"] = doc.get("branch_filter", "")
        if "active" in doc:
            hook["active"] = bool(doc["active"])
        hook["updated_at"] = _TIME

    def _hook_json(self, hook: dict[str, Any]) -> dict[str, Any]:
        """A ``Hook`` as ToHook renders it (the secret is never in it)."""
        from apidoc import forgejo_definition, problem

        doc = {"id": hook["id"], "type": hook["type"], "events": hook["events"],
               "active": hook["active"], "branch_filter": hook["branch_filter"],
               "authorization_header": "", "content_type": hook["content_type"],
               "config": {"url": hook["url"], "content_type": hook["content_type"],
                          "http_method": "post"},
               "created_at": hook["created_at"], "updated_at": hook["updated_at"]}  # fmt: skip
        why = problem("forgejo", forgejo_definition("Hook"), doc)
        assert why is None, f"the stand-in's Hook breaks the swagger: {why}"
        return doc

    def _test_delivery(self, hook: dict[str, Any], owner: str) -> None:
        """What ``repoTestHook`` makes Forgejo send: a signed ``push`` of a dummy commit,
        with the headers ``AddDefaultHeaders`` sets; its answer is kept in
        :attr:`deliveries`."""
        import hashlib
        import hmac
        import uuid

        from loopback import deliver

        raw = json.dumps(
            {
                "ref": "refs/heads/main",
                "before": "0" * 40,
                "after": "0" * 40,
                "commits": [],
                "repository": {"full_name": owner.split("/", 1)[1]},
            }
        )
        raw_bytes = raw.encode()  # fmt: skip
        sig = hmac.new(hook.get("_secret", "").encode(), raw_bytes, hashlib.sha256).hexdigest()
        guid = str(uuid.uuid4())
        headers = {"Content-Type": "application/json", "X-Forgejo-Event": "push",
                   "X-Forgejo-Event-Type": "push", "X-Forgejo-Delivery": guid,
                   "X-Forgejo-Signature": sig, "X-Gitea-Event": "push",
                   "X-Gitea-Delivery": guid, "X-Gitea-Signature": sig}  # fmt: skip
        status, body = deliver(hook["url"], headers, raw_bytes)
        try:
            answer = json.loads(body) if body else None
        except ValueError:
            answer = body.decode(errors="replace")
        with self._lock:
            self.deliveries.append((status, answer))

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)
        self.notify_change()

    def _failure(self, kind: str) -> tuple[int, Any, tuple[tuple[str, str], ...]] | None:
        with self._lock:
            failure = self._failures.get(kind)
            if failure is None:
                return None
            status, body, times, retry_after, after = failure
            if after > 0:
                failure[4] = after - 1
                return None
            if times is not None:
                if times <= 1:
                    del self._failures[kind]
                else:
                    failure[2] = times - 1
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return status, body, headers

    def _hold_point(self, kind: str) -> None:
        with self._lock:
            event = self._held.get(kind)
            waiting = self._waiting.get(kind)
        if event is not None and waiting is not None:
            waiting.set()
            event.wait(60)

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


def _check_review(doc: Any, pull: dict[str, Any] | None) -> str | None:
    """Why a CreatePullReviewOptions body would be refused (None if it is fine); the
    rules and their sources are in the module doc."""
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    for key in ("body", "event", "commit_id"):
        if key in doc and not isinstance(doc[key], str):
            return f"{key} must be a string"
    event = doc.get("event", "")
    if event not in EVENTS:
        return f"unknown event {event!r}"
    comments = doc.get("comments", [])
    if not isinstance(comments, list):
        return "comments must be an array"
    for c in comments:
        if not isinstance(c, dict) or not isinstance(c.get("path"), str):
            return "each comment needs a path"
        for key in ("new_position", "old_position"):
            if key in c and (not isinstance(c[key], int) or isinstance(c[key], bool)):
                return f"comment {key} must be an integer"
    if event in ("REQUEST_CHANGES", "COMMENT") and not doc.get("body", "").strip() and not comments:
        return f"review event {event} requires a body or a comment"
    if pull is not None and event in ("APPROVED", "REQUEST_CHANGES"):
        if pull.get("user", {}).get("login") == BOT_LOGIN:
            verb = "approve" if event == "APPROVED" else "reject"
            return f"{verb} your own pull is not allowed"
        if pull.get("state") == "closed":
            return "can't submit review for a closed or merged PR"
    return None


def _review_json(fake: FakeForgejo, owner: str, repo: str, index: int, r: dict) -> dict:
    base = fake.base_url
    return {
        "id": r["id"],
        "user": _user(),
        "team": None,
        "state": r["state"],
        "body": r["body"],
        "commit_id": r["commit_id"],
        "stale": False,
        "official": False,
        "dismissed": False,
        "comments_count": len(r["comments"]),
        "submitted_at": _TIME,
        "updated_at": _TIME,
        "html_url": f"{base}/{owner}/{repo}/pulls/{index}#issuecomment-{r['id']}",
        "pull_request_url": f"{base}/{owner}/{repo}/pulls/{index}",
    }


def _make_handler(fake: FakeForgejo) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``fake``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-forgejo/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
            data = b"" if body is None else json.dumps(body).encode("utf-8")
            try:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up

        def _kind(self, method: str, path: str) -> str:
            if method == "POST" and _STATUS_PATH.match(path):
                return "status"
            if method == "POST" and _REVIEW_PATH.match(path):
                return "review"
            if method == "GET" and _REVIEW_PATH.match(path):
                return "reviews"
            if method == "DELETE" and _REVIEW_ONE.match(path):
                return "delete"
            if method == "GET" and path == "/api/v1/version":
                return "version"
            if method == "GET" and path == "/api/v1/user":
                return "user"
            if method == "GET" and _PULL_PATH.match(path):
                return "pull"
            if method == "GET" and _PULLS_PATH.match(path):
                return "pulls"
            if method == "PATCH" and _REPO_PATH.match(path):
                return "repo_edit"
            if method in ("GET", "POST") and _HOOKS_PATH.match(path):
                return "hooks" if method == "GET" else "hook_create"
            if method == "PATCH" and _HOOK_PATH.match(path):
                return "hook_edit"
            if method == "POST" and _HOOK_TEST.match(path):
                return "hook_test"
            if method == "GET" and _PERMISSION_PATH.match(path):
                return "permission"
            if method in ("GET", "POST") and _COMMENTS.match(path):
                return "comments" if method == "GET" else "comment"
            if method in ("GET", "PATCH") and _COMMENT.match(path):
                return "comment_get" if method == "GET" else "comment_edit"
            if fake.git_root and method in ("GET", "POST") and _GIT_PATH.match(path):
                return "git"
            return "unknown"

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
            kind = self._kind(method, path)
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
            fake._hold_point(kind)
            if kind == "unknown":
                self._send(404, _api_error("not found"))
                return
            header = self.headers.get("Authorization", "")
            if kind == "git":
                if not fake._authorized(header):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="Gitea"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._git(method, raw)
                return
            # A token, when sent, is checked on every route; /version alone needs none.
            if (header or kind != "version") and not fake._authorized(header):
                self._send(401, _api_error("user does not exist or token is invalid"))
                return
            lacking = fake.scope_refused(method, path)
            if lacking is not None:
                message = f"token does not have at least one of required scope(s): [{lacking}]"
                self._send(403, _api_error(message))
                return
            if kind == "repo_edit":  # past the scope check, as repoAssignment comes after it
                self._send(404, _api_error("repository does not exist"))
                return
            if kind in ("hooks", "hook_create", "hook_edit", "hook_test"):
                self._send(*fake.hook_call(kind, path, doc))
                return
            failure = fake._failure(kind)
            if failure is not None:
                self._send(*failure)
                return
            if kind == "version":
                self._send(200, {"version": VERSION})
            elif kind == "user":
                self._send(200, _user())
            elif kind == "status":
                self._status(_STATUS_PATH.match(path), doc)
            elif kind == "pull":
                m = _PULL_PATH.match(path)
                assert m is not None
                owner, repo, index = m.groups()
                pull = fake._pull(owner, repo, int(index))
                if pull is None:
                    self._send(404, _api_error("pull request does not exist"))
                else:
                    self._send(200, pull)
            elif kind == "pulls":
                self._pulls_page(_PULLS_PATH.match(path))
            elif kind in ("comment", "comments", "comment_get", "comment_edit"):
                self._comments(kind, path, doc)
            elif kind == "permission":
                owner, repo, login = _PERMISSION_PATH.match(path).groups()  # type: ignore[union-attr]
                self._send(*fake._permission(owner, repo, login))
            elif kind == "reviews":
                m = _REVIEW_PATH.match(path)
                assert m is not None
                owner, repo, index = m.groups()
                reviews = fake.pull_reviews(owner, repo, int(index))
                # ``page`` and ``limit`` (Forgejo's default page size is 30 where not given)
                params = urllib.parse.parse_qs(self.path.partition("?")[2])
                limit = int(params.get("limit", ["30"])[0])
                first = (int(params.get("page", ["1"])[0]) - 1) * limit
                shown = reviews[first : first + limit]
                self._send(200, [_review_json(fake, owner, repo, int(index), r) for r in shown])
            elif kind == "delete":
                m = _REVIEW_ONE.match(path)
                assert m is not None
                owner, repo, index, review_id = m.groups()
                with fake._lock:
                    reviews = fake._reviews.get((owner, repo, int(index)), [])
                    kept = [r for r in reviews if r["id"] != int(review_id)]
                    found = len(kept) != len(reviews)
                    fake._reviews[(owner, repo, int(index))] = kept
                if found:
                    self._send(204, None)
                else:
                    self._send(404, _api_error("review does not exist"))
            else:
                self._review(_REVIEW_PATH.match(path), doc)

        def _pulls_page(self, match: re.Match[str] | None) -> None:
            assert match is not None
            owner, repo = match.groups()
            query = urllib.parse.parse_qs(self.path.partition("?")[2])
            state = query.get("state", ["open"])[-1]
            try:
                page = max(int(query.get("page", ["1"])[-1]), 1)
                limit = int(query.get("limit", [str(MAX_RESPONSE_ITEMS)])[-1])
            except ValueError:
                self._send(422, _api_error("page and limit must be integers"))
                return
            if state not in ("open", "closed", "all"):
                self._send(422, _api_error(f"state {state!r} is not open, closed or all"))
                return
            limit = MAX_RESPONSE_ITEMS if limit <= 0 else min(limit, MAX_RESPONSE_ITEMS)
            with fake._lock:
                pulls = [p for (o, r, _n), p in fake._pulls.items() if (o, r) == (owner, repo)]
            pulls = [p for p in pulls if state == "all" or p["state"] == state]
            pulls.sort(key=lambda p: -p["number"])
            self._send(200, pulls[(page - 1) * limit : page * limit])

        def _status(self, match: re.Match[str] | None, doc: Any) -> None:
            assert match is not None
            problem = _check_status(doc)
            if problem:
                self._send(422, _api_error(problem))
                return
            owner, repo, sha = match.groups()
            if not fake.has_commit(owner, repo, sha):
                self._send(404, _api_error(f"sha does not exist [sha: {sha}]"))
                return
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
            owner, repo, index = match.groups()
            key = (owner, repo, int(index))
            problem = _check_review(doc, fake._pull(owner, repo, int(index)))
            if problem:
                self._send(422, _api_error(problem))
                return
            with fake._lock:
                reviews = fake._reviews.setdefault(key, [])
                pending = next((r for r in reviews if r["state"] == "PENDING"), None)
                if pending is None:  # GetCurrentReview finds none: a new pending one
                    pending = {"id": next(fake._ids), "state": "PENDING", "body": "",
                               "commit_id": "", "comments": []}  # fmt: skip
                    reviews.append(pending)
                pending["comments"].extend(doc.get("comments", []))
                midway = fake._midway.get("review", 0)
                if midway:
                    fake._midway["review"] = midway - 1
                else:
                    pending["state"] = doc.get("event") or "PENDING"
                    pending["body"] = doc.get("body", "")
                    pending["commit_id"] = doc.get("commit_id", "")
                review = dict(pending)
            if midway:
                self._send(500, _api_error("fake: failed while submitting the review"))
                return
            self._send(200, _review_json(fake, owner, repo, int(index), review))

        def _comments(self, kind: str, path: str, doc: Any) -> None:
            """``issueCreateComment``, ``issueGetComments``, ``issueGetComment``,
            ``issueEditComment``: bodies validated against the swagger's definitions;
            editing another user's comment is 403 (the bot is no repository admin here;
            ``routers/api/v1/repo/issue_comment.go`` ``editIssueComment``)."""
            if kind in ("comment", "comments"):
                m = _COMMENTS.match(path)
                assert m is not None
                owner, repo, index = m.groups()
                if fake.knows_repo(owner, repo) and fake._pull(owner, repo, int(index)) is None:
                    self._send(404, _api_error("issue does not exist"))
                elif kind == "comments":
                    self._send(200, fake.comments.on(owner, repo, int(index)))
                elif problem := refusal(forgejo_schema("CreateIssueCommentOption"), doc):
                    self._send(422, _api_error(problem))
                else:
                    made = fake.comments.add(owner, repo, int(index), doc["body"], _user())
                    self._send(201, fake.comments.get(made))
                return
            m = _COMMENT.match(path)
            assert m is not None
            comment = fake.comments.get(int(m.group(3)))
            if comment is None:
                self._send(404, _api_error("comment does not exist"))
            elif kind == "comment_get":
                self._send(200, comment)
            elif problem := refusal(forgejo_schema("EditIssueCommentOption"), doc):
                self._send(422, _api_error(problem))
            elif comment["user"].get("id") != BOT_ID:
                self._send(403, _api_error("user is not the poster of the comment"))
            else:
                self._send(200, fake.comments.edit(comment["id"], doc["body"]))

        def _git(self, method: str, body: bytes) -> None:
            """One smart-HTTP request through ``git http-backend`` (CGI), or a redirect."""
            if fake.git_redirect:
                redirect(self, fake.git_redirect)
                return
            serve_git(self, fake.git_root, method, body)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

    return Handler
