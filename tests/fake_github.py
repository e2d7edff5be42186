"""A loopback stand-in for GitHub's REST API (github.com or GHES), which tests cannot reach.

It follows GitHub's OpenAPI description (the ``github/rest-api-description`` repository,
``descriptions/api.github.com``), under ``/api/v3`` as GHES serves it, and implements
these operations (by operation id):

* ``apps/get-authenticated`` ``GET /app`` and ``apps/get-repo-installation``
  ``GET /repos/{owner}/{repo}/installation``: App JWT only;
* ``apps/create-installation-access-token`` ``POST /app/installations/{id}/access_tokens``
  (App JWT; ``repositories`` must be repositories of the installation, else 422) -> 201
  ``{"token", "expires_at"}``, the token valid for one hour of the stand-in's clock;
* ``pulls/get``, ``pulls/list-files`` (``per_page``/``page``), ``pulls/list-reviews``,
  ``pulls/create-review``, ``repos/create-commit-status``, ``rate-limit/get``;
* ``meta/get`` ``GET /meta`` (no authentication); ``users/get-authenticated``
  ``GET /user``: the bot (``TOKEN_LOGIN`` unless given), with ``x-oauth-scopes`` for a token in
  :attr:`FakeGitHub.token_scopes` (a classic token; the others are fine-grained, which
  GitHub sends no scopes for); ``apps/list-installations`` ``GET /app/installations``
  (App JWT): each account installed, with :attr:`FakeGitHub.permissions`.

Every answer carries ``x-github-enterprise-version`` (the stand-in is GHES-shaped).

Repository webhooks: ``repos/list-webhooks``, ``repos/create-webhook`` (a second hook
with the same ``config.url`` is 422 "Hook already exists on this repository"),
``repos/update-webhook``, ``repos/ping-webhook`` (a signed ``ping`` is delivered to
the hook's URL at once, ``X-Hub-Signature-256`` with its secret) and
``repos/list-webhook-deliveries`` (newest first, with each ``status_code``). Their
request bodies are checked against the OpenAPI document's schemas (422 otherwise), and
their answers too (tests/apidoc.py); a secret is never returned.

It refuses what GitHub refuses:

* no token, an unknown one or an installation token past its ``expires_at`` -> 401
  ``{"message": "Bad credentials"}``; a JWT not signed by the App's key (RS256 checked
  with the App's public key), with another ``iss``, expired, or valid for more than 10
  minutes -> 401; a JWT on a repository route or a token on an App route -> 401;
* ``pulls/create-review``: a comment whose ``line`` is not a RIGHT-side line of the
  file's diff hunks (or whose file is not in the diff) -> 422 for the *whole* review,
  nothing posted ("Line could not be resolved"); REQUEST_CHANGES or COMMENT without a
  ``body`` -> 422; REQUEST_CHANGES by the PR's author -> 422 ("Can not request changes
  on your own pull request"); ``commit_id`` not a 40-hex SHA -> 422;
* ``repos/create-commit-status``: a ``state`` outside error/failure/pending/success, a
  ``description`` over 140 characters, or a ``target_url`` that is not a URL -> 422.

With ``git_root`` it also serves the bare repositories ``<git_root>/<owner>/<repo>.git``
over smart HTTP (``git http-backend``) at ``/<owner>/<repo>.git``, as GitHub does, and
wants HTTP Basic ``x-access-token:<token>`` with a valid token (401 otherwise);
:attr:`FakeGitHub.git_redirect` (an origin) makes it answer them with a 302 to the same
path there instead. The files of a pull request come from ``git diff`` of base and head
in that repository, unless :meth:`FakeGitHub.set_pull` is given ``files``.

:meth:`FakeGitHub.fail` makes a kind of request answer an error (with headers, e.g. a
secondary rate limit's ``retry-after``) ``times`` times; :meth:`FakeGitHub.lose_answers`
makes it take effect and then answer 502.

Rate limits as GitHub's "Rate limits for the REST API" describes them: every API answer
carries ``x-ratelimit-limit``, ``-remaining``, ``-used``, ``-reset`` (epoch seconds) and
``-resource``; :meth:`FakeGitHub.secondary_limit` answers 403 or 429 with the message
"You have exceeded a secondary rate limit" (GitHub's ``basic-error`` body, the
``forbidden`` response of the OpenAPI document), ``retry-after`` only when given, and
``x-ratelimit-remaining`` not 0.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fake_comments import GITHUB_MAX_BODY, CommentStore, github_schema, refusal
from hostile import redirect
from loopback import LoopbackServer, serve_git

PREFIX = "/api/v3"
SECONDARY_LIMIT = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
    "before you try again.",
    "documentation_url": "https://docs.github.com/rest/using-the-rest-api/"
    "rate-limits-for-the-rest-api#about-secondary-rate-limits",
}
BAD_CREDENTIALS = {
    "message": "Bad credentials",
    "documentation_url": "https://docs.github.com/rest",
}
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
ROUTES = [
    ("GET", re.compile(r"/app"), "app"),
    ("POST", re.compile(r"/app/installations/(?P<id>\d+)/access_tokens"), "mint"),
    ("GET", re.compile(_REPO + r"/installation"), "installation"),
    ("GET", re.compile(_REPO + r"/pulls/(?P<n>\d+)"), "pull"),
    ("GET", re.compile(_REPO + r"/pulls/(?P<n>\d+)/files"), "files"),
    ("GET", re.compile(_REPO + r"/pulls/(?P<n>\d+)/reviews"), "reviews"),
    ("POST", re.compile(_REPO + r"/pulls/(?P<n>\d+)/reviews"), "review"),
    ("POST", re.compile(_REPO + r"/statuses/(?P<sha>[0-9a-fA-F]{40})"), "status"),
    ("GET", re.compile(r"/rate_limit"), "rate_limit"),
    ("GET", re.compile(_REPO + r"/hooks"), "hooks"),
    ("POST", re.compile(_REPO + r"/hooks"), "hook_create"),
    ("PATCH", re.compile(_REPO + r"/hooks/(?P<id>\d+)"), "hook_edit"),
    ("POST", re.compile(_REPO + r"/hooks/(?P<id>\d+)/pings"), "hook_ping"),
    ("GET", re.compile(_REPO + r"/hooks/(?P<id>\d+)/deliveries"), "hook_deliveries"),
    ("GET", re.compile(r"/meta"), "meta"),
    ("GET", re.compile(r"/app/installations"), "installations"),
    ("GET", re.compile(r"/user"), "user"),
    ("POST", re.compile(_REPO + r"/issues/(?P<n>\d+)/comments"), "comment"),
    ("GET", re.compile(_REPO + r"/issues/(?P<n>\d+)/comments"), "comments"),
    ("GET", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), "comment_get"),
    ("PATCH", re.compile(_REPO + r"/issues/comments/(?P<id>\d+)"), "comment_edit"),
]
TOKEN_LOGIN = "auto-review-bot"  # the user a static token (a PAT) belongs to
APP_LOGIN = "auto-review[bot]"  # an App's installation acts as <slug>[bot]
GHES_VERSION = "3.15.0"  # x-github-enterprise-version, as GHES sends on every answer
_GIT = re.compile(r"/(?P<owner>[^/]+)/(?P<repo>[^/]+)\.git/(info/refs|git-upload-pack)")
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass
class Received:
    method: str
    path: str
    kind: str
    headers: dict[str, str]
    json: Any
    status: int = 0


@dataclass
class Pull:
    head_sha: str
    base_ref: str
    author: str = "octocat"
    state: str = "open"
    draft: bool = False
    files: list[dict[str, Any]] | None = None
    reviews: list[dict[str, Any]] = field(default_factory=list)


def right_lines(patch: str) -> set[int]:
    """The stand-in's own reading of a patch: RIGHT-side lines inside its hunks."""
    out: set[int] = set()
    line = None
    for text in patch.splitlines():
        m = _HUNK.match(text)
        if m:
            line = int(m.group(1))
        elif line is not None and text[:1] in ("+", " "):
            out.add(line)
            line += 1
    return out


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGitHub(LoopbackServer):
    """See the module doc. ``tokens``: static tokens (PATs); ``app_key``: the App's
    private key (its public half verifies JWTs); ``now``: the stand-in's clock."""

    def __init__(
        self,
        *,
        ssl_context: Any = None,
        tokens: tuple[str, ...] = (),
        app_id: int = 4242,
        app_key: rsa.RSAPrivateKey | None = None,
        git_root: str | os.PathLike[str] | None = None,
        bot_login: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ssl_context)
        self.tokens: dict[str, float | None] = dict.fromkeys(tokens)
        # token -> its x-oauth-scopes (a classic token); absent: a fine-grained one
        self.token_scopes: dict[str, str] = {}
        self.hooks: dict[tuple[str, str], list[dict[str, Any]]] = {}  # with "_secret"
        # what each installation grants (apps/list-installations' ``permissions``)
        self.permissions = {"pull_requests": "write", "statuses": "write",
                            "contents": "read", "metadata": "read"}  # fmt: skip
        self.app_id = app_id
        self.public_key = app_key.public_key() if app_key is not None else None
        self.git_root = None if git_root is None else os.fspath(git_root)
        self.git_redirect: str | None = None  # an origin git requests are sent to (302)
        # who the bot is: an App's installation acts as <slug>[bot], a token as its user
        self.token_login = bot_login or TOKEN_LOGIN
        self.bot_login = APP_LOGIN if app_key is not None else self.token_login
        self.now = now
        self.installations: dict[tuple[str, str], int] = {}
        self.pulls: dict[tuple[str, str, int], Pull] = {}
        self.statuses: list[dict[str, Any]] = []
        self.requests: list[Received] = []
        self.minted: list[str] = []
        self.comments = CommentStore()
        self._failures: dict[str, list[tuple[int, dict[str, str], Any]]] = {}
        self._lost: dict[str, int] = {}
        self._lock = threading.Lock()
        self._status_posted = threading.Condition(self._lock)
        self._ids = itertools.count(1)

    # -- test API

    @property
    def api_url(self) -> str:
        return f"{self.scheme}://localhost:{self.port}{PREFIX}"

    def install(self, owner: str, repo: str, installation_id: int = 77) -> None:
        self.installations[(owner, repo)] = installation_id

    def set_pull(
        self, owner: str, repo: str, number: int, head_sha: str, base_ref: str = "main", **kw: Any
    ) -> Pull:
        pull = Pull(head_sha=head_sha, base_ref=base_ref, **kw)
        self.pulls[(owner, repo, number)] = pull
        return pull

    def fail(
        self,
        kind: str,
        status: int,
        times: int = 1,
        headers: dict | None = None,
        body: Any = None,
    ) -> None:
        """The next ``times`` requests of ``kind`` answer ``status`` with ``headers`` and
        ``body`` (default ``{"message": "fake failure"}``)."""
        answer = (status, headers or {}, body or {"message": "fake failure"})
        with self._lock:
            self._failures.setdefault(kind, []).extend([answer] * times)

    def secondary_limit(
        self, kind: str, status: int = 403, times: int = 1, retry_after: str | None = None
    ) -> None:
        """The next ``times`` requests of ``kind`` hit a secondary rate limit (see the
        module doc): no ``retry-after`` unless given, ``x-ratelimit-remaining`` not 0."""
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        self.fail(kind, status, times, headers, body=SECONDARY_LIMIT)

    def lose_answers(self, kind: str, times: int = 1) -> None:
        """The next ``times`` requests of ``kind`` take effect, then answer 502 (a proxy
        in front of GitHub timed out after GitHub acted)."""
        with self._lock:
            self._lost[kind] = self._lost.get(kind, 0) + times

    def of_kind(self, kind: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.kind == kind]

    def limit_headers(self) -> dict[str, str]:
        """The primary rate limit's headers, as GitHub sends them on every answer."""
        with self._lock:
            used = len(self.requests)
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(max(5000 - used, 1)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(int(self.now()) + 3600),
            "x-ratelimit-resource": "core",
        }

    def reviews(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.pulls[(owner, repo, number)].reviews)

    # -- rules

    def jwt_ok(self, jwt: str) -> bool:
        """An App JWT: RS256 by the App's key, iss the App id, live, at most 10 min."""
        if self.public_key is None or jwt.count(".") != 2:
            return False
        head, body, sig = jwt.split(".")
        try:
            header = json.loads(_b64d(head))
            claims = json.loads(_b64d(body))
            self.public_key.verify(
                _b64d(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature):
            return False
        if header.get("alg") != "RS256" or str(claims.get("iss")) != str(self.app_id):
            return False
        iat, exp, now = claims.get("iat"), claims.get("exp"), self.now()
        if not isinstance(iat, int) or not isinstance(exp, int):
            return False
        return iat <= now + 60 and now < exp and exp - iat <= 600

    def token_ok(self, token: str) -> bool:
        with self._lock:
            if token not in self.tokens:
                return False
            expires = self.tokens[token]
        return expires is None or self.now() < expires

    def _mint(self, installation: int, doc: Any) -> tuple[int, Any]:
        names = doc.get("repositories") if isinstance(doc, dict) else None
        mine = {r for (o, r), i in self.installations.items() if i == installation}
        if not mine:
            return 404, {"message": "Not Found"}
        if names is not None and (not isinstance(names, list) or not set(names) <= mine):
            return 422, {
                "message": "There is at least one repository that does not exist or "
                "is not accessible to the parent installation."
            }
        token = f"ghs_{next(self._ids):04d}{os.urandom(12).hex()}"
        expires = self.now() + 3600
        with self._lock:
            self.tokens[token] = expires
            self.minted.append(token)
        when = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)
        return 201, {
            "token": token,
            "expires_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "repository_selection": "selected",
        }

    def files(self, owner: str, repo: str, pull: Pull) -> list[dict[str, Any]]:
        if pull.files is not None:
            return pull.files
        git_dir = os.path.join(self.git_root or "", owner, f"{repo}.git")
        diff = subprocess.run(
            [
                "git",
                "--git-dir",
                git_dir,
                "diff",
                "--no-color",
                "--no-renames",
                f"{pull.base_ref}...{pull.head_sha}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        out: list[dict[str, Any]] = []
        for chunk in re.split(r"^diff --git ", diff, flags=re.M)[1:]:
            name = re.search(r"^\+\+\+ b/(.*)$", chunk, re.M)
            patch = chunk[chunk.find("\n@@") + 1 :] if "\n@@" in chunk else None
            if name:
                out.append({"filename": name.group(1), "status": "modified", "patch": patch})
        return out

    def login_for(self, credential: str) -> str:
        """Who acts with ``credential``: the App's bot for an installation token, else the
        token's user."""
        return APP_LOGIN if credential in self.minted else self.token_login

    def create_review(
        self, owner: str, repo: str, pull: Pull, doc: Any, login: str = ""
    ) -> tuple[int, Any]:
        if not isinstance(doc, dict):
            return 400, {"message": "Problems parsing JSON"}
        event = doc.get("event")
        if event not in ("APPROVE", "REQUEST_CHANGES", "COMMENT"):
            return 422, {"message": "Unprocessable Entity", "errors": ["event is invalid"]}
        if event != "APPROVE" and not doc.get("body"):
            return 422, {"message": "Unprocessable Entity", "errors": ["Review body is required"]}
        commit = doc.get("commit_id")
        if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
            return 422, {"message": "Unprocessable Entity", "errors": ["commit_id is invalid"]}
        login = login or self.bot_login
        if event == "REQUEST_CHANGES" and pull.author == login:
            return 422, {
                "message": "Unprocessable Entity",
                "errors": ["Can not request changes on your own pull request"],
            }
        lines = {
            f["filename"]: right_lines(f.get("patch") or "") for f in self.files(owner, repo, pull)
        }
        for c in doc.get("comments") or []:
            ok = (
                isinstance(c, dict)
                and isinstance(c.get("path"), str)
                and isinstance(c.get("body"), str)
                and isinstance(c.get("line"), int)
                and c.get("side", "RIGHT") == "RIGHT"
                and c["line"] in lines.get(c["path"], set())
            )
            if not ok:
                return 422, {
                    "message": "Unprocessable Entity",
                    "errors": ["Line could not be resolved"],
                }
        state = {"COMMENT": "COMMENTED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}.get(
            event, "APPROVED"
        )
        review = {
            "id": next(self._ids),
            "user": {"login": login},
            "body": doc["body"],
            "state": state,
            "commit_id": commit,
            "comments": doc.get("comments") or [],
        }
        with self._lock:
            pull.reviews.append(review)
        return 200, review

    def create_status(self, sha: str, doc: Any) -> tuple[int, Any]:
        if not isinstance(doc, dict) or doc.get("state") not in (
            "error",
            "failure",
            "pending",
            "success",
        ):
            return 422, {"message": "Validation Failed", "errors": [{"field": "state"}]}
        if len(str(doc.get("description") or "")) > 140:
            return 422, {"message": "Validation Failed", "errors": [{"field": "description"}]}
        url = doc.get("target_url")
        if url is not None and not re.match(r"https?://", str(url)):
            return 422, {"message": "Validation Failed", "errors": [{"field": "target_url"}]}
        with self._lock:
            self.statuses.append(dict(doc, sha=sha))
            self._status_posted.notify_all()
        return 201, dict(doc, id=next(self._ids))

    def hook_call(self, kind: str, match: Any, doc: Any) -> tuple[int, Any]:
        """The repository webhook operations (see the module doc): bodies checked against
        the OpenAPI request schemas, answers against the response schemas."""
        from apidoc import github_answer_schema, github_request_schema, problem

        key = (match["owner"], match["repo"])
        template = {
            "hooks": ("GET", "/repos/{owner}/{repo}/hooks"),
            "hook_create": ("POST", "/repos/{owner}/{repo}/hooks"),
            "hook_edit": ("PATCH", "/repos/{owner}/{repo}/hooks/{hook_id}"),
            "hook_ping": ("POST", "/repos/{owner}/{repo}/hooks/{hook_id}/pings"),
            "hook_deliveries": ("GET", "/repos/{owner}/{repo}/hooks/{hook_id}/deliveries"),
        }[kind]
        if template[0] in ("POST", "PATCH") and kind != "hook_ping":
            why = problem("github", github_request_schema(*template), doc)
            if why is not None:
                return 422, {"message": "Invalid request.", "errors": [why]}
        with self._lock:
            hooks = self.hooks.setdefault(key, [])
            found = [h for h in hooks if "id" in match.groupdict() and h["id"] == int(match["id"])]
        status, body = 200, None
        if kind == "hooks":
            body = [self._hook_json(key, h) for h in hooks]
        elif kind == "hook_create":
            config = doc.get("config") or {}
            if not config.get("url"):
                return 422, {"message": "Validation Failed", "errors": ["url is missing"]}
            # "Each webhook should have a unique config" (repos/create-webhook)
            if any(h["config"]["url"] == config["url"] for h in hooks):
                return 422, {"message": "Validation Failed",
                             "errors": ["Hook already exists on this repository"]}  # fmt: skip
            unused = {"code": None, "status": "unused", "message": None}
            hook = {"id": next(self._ids), "name": "web", "active": doc.get("active", True),
                    "events": doc.get("events", ["push"]), "config": {}, "deliveries": [],
                    "last_response": unused}  # fmt: skip
            self._hook_config(hook, config)
            with self._lock:
                hooks.append(hook)
            status, body = 201, self._hook_json(key, hook)
        elif not found:
            return 404, {"message": "Not Found"}
        elif kind == "hook_edit":
            hook = found[0]
            self._hook_config(hook, doc.get("config") or {})
            if "events" in doc:
                hook["events"] = doc["events"]
            if "active" in doc:
                hook["active"] = doc["active"]
            body = self._hook_json(key, hook)
        elif kind == "hook_ping":
            self._ping(key, found[0])
            return 204, None
        else:
            body = list(reversed(found[0]["deliveries"]))
        schema = github_answer_schema(*template, status)
        why = problem("github", schema, body) if schema else None
        assert why is None, f"the stand-in's answer breaks the OpenAPI document: {why}"
        return status, body

    @staticmethod
    def _hook_config(hook: dict[str, Any], config: dict[str, Any]) -> None:
        for name in ("url", "content_type", "insecure_ssl"):
            if name in config:
                hook["config"][name] = config[name]
        if "secret" in config:
            hook["_secret"] = config["secret"]
            hook["config"]["secret"] = "********"  # GitHub never returns a secret

    def _hook_json(self, key: tuple[str, str], hook: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.api_url}/repos/{key[0]}/{key[1]}/hooks/{hook['id']}"
        when = "2026-01-01T00:00:00Z"
        return {"type": "Repository", "id": hook["id"], "name": "web", "active": hook["active"],
                "events": hook["events"], "config": dict(hook["config"]), "updated_at": when,
                "created_at": when, "url": url, "test_url": f"{url}/test",
                "ping_url": f"{url}/pings", "deliveries_url": f"{url}/deliveries",
                "last_response": dict(hook["last_response"])}  # fmt: skip

    def _ping(self, key: tuple[str, str], hook: dict[str, Any]) -> None:
        """Deliver a signed ``ping`` ("Webhook events and payloads", ping) to the hook's
        URL, as GitHub does, and record it among the hook's deliveries."""
        import hashlib
        import hmac
        import uuid

        from loopback import deliver

        raw = json.dumps({"zen": "Design for failure.", "hook_id": hook["id"],
                          "hook": {"type": "Repository", "id": hook["id"],
                                   "events": hook["events"], "active": hook["active"]},
                          "repository": {"full_name": f"{key[0]}/{key[1]}"}}).encode()  # fmt: skip
        secret = hook.get("_secret", "").encode()
        guid = str(uuid.uuid4())
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "ping",
                   "X-GitHub-Delivery": guid, "X-GitHub-Hook-ID": str(hook["id"]),
                   "X-Hub-Signature-256": "sha256="
                   + hmac.new(secret, raw, hashlib.sha256).hexdigest()}  # fmt: skip
        status, _ = deliver(hook["config"].get("url", ""), headers, raw)
        text = "OK" if 200 <= status < 300 else f"Invalid HTTP Response: {status}"
        hook["last_response"] = {"code": status, "status": "active", "message": text}
        hook["deliveries"].append(
            {
                "id": next(self._ids),
                "guid": guid,
                "delivered_at": "2026-01-01T00:00:00Z",
                "redelivery": False,
                "duration": 0.01,
                "status": text,
                "status_code": status,
                "event": "ping",
                "action": None,
                "installation_id": None,
                "repository_id": 1,
            }
        )

    def wait_for_statuses(
        self, sha: str, done: Callable[[list[str]], bool], timeout: float
    ) -> list[str]:
        """The states posted for `sha` once `done(states)` holds (woken by each post);
        whatever was posted when `timeout` runs out."""
        with self._status_posted:
            self._status_posted.wait_for(
                lambda: done([x["state"] for x in self.statuses if x["sha"] == sha]), timeout
            )
            return [x["state"] for x in self.statuses if x["sha"] == sha]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)


def _make_handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path, _, query = self.path.partition("?")
            git = _GIT.match(path)
            if git and fake.git_root:
                self._git(method, path, query, raw)
                return
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            kind, match = "unknown", None
            if path.startswith(PREFIX):
                for m, pattern, name in ROUTES:
                    match = pattern.fullmatch(path[len(PREFIX) :])
                    if m == method and match:
                        kind = name
                        break
            rec = Received(
                method, self.path, kind, {k.lower(): v for k, v in self.headers.items()}, doc
            )
            with fake._lock:
                fake.requests.append(rec)
            status, body, headers = self._answer(kind, match, doc, query)
            with fake._lock:
                if status < 300 and fake._lost.get(kind):
                    fake._lost[kind] -= 1
                    status, body, headers = 502, {"message": "Bad Gateway"}, {}
            rec.status = status
            if kind != "unknown":  # every API answer says where the primary limit stands
                headers = {**fake.limit_headers(), **headers}
                headers["x-github-enterprise-version"] = GHES_VERSION
            self._send(status, body, headers)

        def _answer(self, kind: str, match: Any, doc: Any, query: str) -> tuple[int, Any, dict]:
            if kind == "unknown":
                return 404, {"message": "Not Found"}, {}
            if kind == "meta":  # meta/get needs no authentication
                return 200, {"verifiable_password_authentication": False}, {}
            scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() not in ("bearer", "token") or not credential:
                return 401, {"message": "Requires authentication"}, {}
            app_route = kind in ("app", "mint", "installation", "installations")
            authed = fake.jwt_ok(credential) if app_route else fake.token_ok(credential)
            if not authed:
                return 401, BAD_CREDENTIALS, {}
            with fake._lock:
                queued = fake._failures.get(kind)
                failure = queued.pop(0) if queued else None
            if failure is not None:
                return failure[0], failure[2], failure[1]
            if kind == "app":
                return 200, {"id": fake.app_id, "slug": "auto-review"}, {}
            if kind == "installations":
                ids = {owner: inst for (owner, _), inst in fake.installations.items()}
                return (
                    200,
                    [
                        {"id": inst, "account": {"login": owner}, "app_id": fake.app_id,
                         "permissions": dict(fake.permissions)}
                        for owner, inst in sorted(ids.items())
                    ],
                    {},
                )  # fmt: skip
            if kind.startswith("hook"):
                return (*fake.hook_call(kind, match, doc), {})
            if kind == "rate_limit":
                return 200, {"rate": {"limit": 5000, "remaining": 4999, "reset": 0}}, {}
            if kind == "user":
                if credential in fake.minted:  # an installation token is no user
                    return 403, {"message": "Resource not accessible by integration"}, {}
                scopes = fake.token_scopes.get(credential)  # a classic token's scopes
                extra = {} if scopes is None else {"x-oauth-scopes": scopes}
                return 200, {"login": fake.token_login, "id": 1, "type": "User"}, extra
            if kind.startswith("comment"):
                return self._comments(kind, match, doc, query, fake.login_for(credential))
            if kind == "mint":
                return (*fake._mint(int(match["id"]), doc), {})
            owner, repo = match["owner"], match["repo"]
            if kind == "installation":
                inst = fake.installations.get((owner, repo))
                return (200, {"id": inst}, {}) if inst else (404, {"message": "Not Found"}, {})
            if kind == "status":
                return (*fake.create_status(match["sha"].lower(), doc), {})
            pull = fake.pulls.get((owner, repo, int(match["n"])))
            if pull is None:
                return 404, {"message": "Not Found"}, {}
            if kind == "pull":
                return (
                    200,
                    {
                        "number": int(match["n"]),
                        "state": pull.state,
                        "draft": pull.draft,
                        "user": {"login": pull.author},
                        "merged": False,
                        "head": {"sha": pull.head_sha, "ref": "topic"},
                        "base": {
                            "ref": pull.base_ref,
                            "repo": {
                                "clone_url": f"{fake.api_url[: -len(PREFIX)]}/{owner}/{repo}.git"
                            },
                        },
                    },
                    {},
                )
            if kind == "files":
                params = dict(p.partition("=")[::2] for p in query.split("&") if p)
                per, page = int(params.get("per_page", 30)), int(params.get("page", 1))
                files = fake.files(owner, repo, pull)
                return 200, files[(page - 1) * per : page * per], {}
            if kind == "reviews":  # pulls/list-reviews: per_page (default 30) and page
                params = dict(p.partition("=")[::2] for p in query.split("&") if p)
                per, page = int(params.get("per_page", 30)), int(params.get("page", 1))
                return 200, list(pull.reviews)[(page - 1) * per : page * per], {}
            return (*fake.create_review(owner, repo, pull, doc, fake.login_for(credential)), {})

        def _comments(
            self, kind: str, match: Any, doc: Any, query: str, login: str
        ) -> tuple[int, Any, dict]:
            """``issues/create-comment``, ``issues/list-comments``, ``issues/get-comment``,
            ``issues/update-comment``: bodies validated against the OpenAPI schemas;
            another user's comment cannot be updated (403, as for a non-admin)."""
            owner, repo = match["owner"], match["repo"]
            if kind in ("comment", "comments"):
                number = int(match["n"])
                if fake.pulls and (owner, repo, number) not in fake.pulls:
                    return 404, {"message": "Not Found"}, {}
                if kind == "comments":
                    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
                    per, page = int(params.get("per_page", 30)), int(params.get("page", 1))
                    return (
                        200,
                        fake.comments.on(owner, repo, number)[(page - 1) * per : page * per],
                        {},
                    )
                schema = github_schema(
                    "/repos/{owner}/{repo}/issues/{issue_number}/comments", "post"
                )
                problem = refusal(schema, doc) or _too_long(doc)
                if problem:
                    return 422, {"message": "Validation Failed", "errors": [problem]}, {}
                made = fake.comments.add(owner, repo, number, doc["body"], {"login": login})
                return 201, fake.comments.get(made), {}
            comment = fake.comments.get(int(match["id"]))
            if comment is None:
                return 404, {"message": "Not Found"}, {}
            if kind == "comment_get":
                return 200, comment, {}
            schema = github_schema("/repos/{owner}/{repo}/issues/comments/{comment_id}", "patch")
            problem = refusal(schema, doc) or _too_long(doc)
            if problem:
                return 422, {"message": "Validation Failed", "errors": [problem]}, {}
            if comment["user"].get("login") != login:
                return 403, {"message": "Must have admin rights to Repository."}, {}
            return 200, fake.comments.edit(comment["id"], doc["body"]), {}

        def _git(self, method: str, path: str, query: str, body: bytes) -> None:
            scheme, _, cred = (self.headers.get("Authorization") or "").partition(" ")
            user, _, token = (
                base64.b64decode(cred).decode(errors="replace") if scheme == "Basic" else ""
            ).partition(":")
            rec = Received(
                method, self.path, "git", {k.lower(): v for k, v in self.headers.items()}, None
            )
            with fake._lock:
                fake.requests.append(rec)
            if user != "x-access-token" or not fake.token_ok(token):
                rec.status = 401
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if fake.git_redirect:
                rec.status = 302
                redirect(self, fake.git_redirect)
                return
            rec.status = serve_git(self, fake.git_root, method, body)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

    return Handler


def _too_long(doc: Any) -> str | None:
    body = doc.get("body") if isinstance(doc, dict) else None
    if isinstance(body, str) and len(body) > GITHUB_MAX_BODY:
        return f"body is too long (maximum is {GITHUB_MAX_BODY} characters)"
    return None
