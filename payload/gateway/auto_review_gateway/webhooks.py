"""What the gateway does with a POST: Forgejo/Gitea webhooks and CI review requests.

``POST /webhooks/forgejo``
    The body is authenticated before anything else is looked at: ``X-Forgejo-Signature``
    (or ``X-Gitea-Signature``; Forgejo sends both) must be the hex HMAC-SHA256 of the raw
    body keyed with ``WEBHOOK_SECRET``, compared in constant time; otherwise 401 and
    nothing is parsed or enqueued. The event is ``X-Forgejo-Event`` / ``X-Gitea-Event``:

    Forgejo's webhook settings have one checkbox per event *type*, and the header
    ``X-Forgejo-Event`` carries the event *family* (``HookEventType.Event()`` in
    Forgejo's ``modules/webhook/type.go``): the types ``pull_request`` and
    ``pull_request_sync`` (*Pull request synchronized*) both arrive as ``pull_request``,
    ``issue_comment`` and ``pull_request_comment`` (*Pull request comment*) both as
    ``issue_comment``; ``X-Forgejo-Event-Type`` names the type.

    * ``pull_request`` with action ``opened``, ``synchronized`` (a push to the head branch;
      GitHub calls it "synchronize", Forgejo and Gitea "synchronized"), ``reopened`` or
      ``ready_for_review`` enqueues a review of the head commit. A draft PR (``draft``,
      or a title with a work-in-progress prefix, Forgejo's ``WIP:`` / ``[WIP]``) is
      skipped, and so is a closed one. Forgejo has no ``ready_for_review``: a draft
      becomes ready by losing its prefix, which sends ``edited`` with
      ``changes.title.from`` (``ChangesPayload`` in ``modules/structs/hook.go``); an
      ``edited`` whose old title was a draft's and whose new one is not is reviewed.
    * ``issue_comment`` (action ``created``) on a pull request whose body mentions
      ``@<AR_BOT_NAME>`` and says ``re-review`` enqueues a forced review of the PR's
      current head. The head is read from the forge when the job runs, not here: the
      answer must reach Forgejo within its delivery timeout (a few seconds), so this
      handler makes no forge call.
    * ``ping`` answers ``{"pong": true}``. Forgejo and Gitea have no ping event: their
      "Test Delivery" button sends a signed ``push`` event with a dummy commit, which is
      answered 200 ``{"ignored": ...}``, so a test delivery shows green exactly when the
      secret matches.
    * anything else: 200 ``{"ignored": "<why>"}``.

    Forgejo can also send the payload form-encoded (``payload=<json>``); both are read,
    and for a form the signature is checked against the JSON in ``payload``, which is
    what the forge signs.

``POST /reviews/ci`` is in :mod:`ci`.

Enqueueing answers 202 ``{"job_id": N}`` (accepted), 200 ``{"duplicate": true}`` (that
delivery, or that head of that PR, is already queued or reviewed) or 503 with
``Retry-After`` (queue full, or the queue could not be written). A body that is not a
JSON object, or lacks a field a review needs, answers 400 (after the signature or token
check, never before). Looking up a PR the forge does not know answers 404, a forge API
failure 502. No answer ever carries a secret or a stack trace.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from auto_review_gateway import httpjson, names
from auto_review_gateway.forgejo import ForgejoConfig
from auto_review_gateway.model import ReviewError

PR_ACTIONS = ("opened", "synchronized", "reopened", "ready_for_review")
# Forgejo's default [repository.pull-request] WORK_IN_PROGRESS_PREFIXES, compared
# case-insensitively (HasWorkInProgressPrefix).
WIP_PREFIXES = ("WIP:", "[WIP]")
RETRY_AFTER_SECONDS = 30
# The events a forge sends; any other value is counted as "other", so a client cannot
# grow the metric's label set.
KNOWN_EVENTS = frozenset(
    {
        "create",
        "delete",
        "fork",
        "issue_comment",
        "issues",
        "ping",
        "pull_request",
        "pull_request_approved",
        "pull_request_comment",
        "pull_request_rejected",
        "pull_request_sync",
        "push",
        "release",
        "repository",
        "status",
        "wiki",
        "workflow_job",
        "workflow_run",
    }
)

_ACTION = re.compile(r"\A[A-Za-z0-9_.-]{1,100}\Z")
_DELIVERY = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
_RE_REVIEW = re.compile(r"\bre-review\b", re.IGNORECASE)


@dataclass
class Reply:
    """An answer: status, JSON body (or text for ``content_type`` text/*), extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class BadRequest(Exception):
    """A request whose content is unusable; the message is safe to send back."""


class _Submission(Protocol):
    status: str
    job_id: int | None


class JobQueueLike(Protocol):
    """The part of :class:`auto_review_gateway.jobs.JobQueue` the HTTP side uses."""

    def submit(self, request: Any) -> _Submission:
        """Store a job; ``.status`` is accepted, duplicate or full."""
        ...

    def depth(self) -> int:
        """Jobs pending or running."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs by state."""
        ...


class MetricsLike(Protocol):
    """The part of :class:`auto_review_gateway.metrics.Metrics` used here."""

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        """Add to a counter."""
        ...


@dataclass
class Intake:
    """Everything the POST endpoints need: secrets, the forge, the queue, the metrics.

    ``job_request`` is the class of the queue's requests (``jobs.JobRequest``), passed in
    so that this module does not import the queue.
    """

    webhook_secret: bytes
    forge: ForgejoConfig
    queue: JobQueueLike
    job_request: Callable[..., Any]
    metrics: MetricsLike
    bot_name: str = "auto-review"
    ci_token: str | None = None
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))

    def __repr__(self) -> str:
        # Secrets never appear, even when the object is printed.
        return f"Intake(forge={self.forge!r}, bot_name={self.bot_name!r})"

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a message."""
        values = [self.forge.token, self.webhook_secret.decode("utf-8", "replace")]
        if self.ci_token:
            values.append(self.ci_token)
        return tuple(values)

    def safe(self, text: str) -> str:
        """``text`` on one line with every secret redacted."""
        for secret in self.secrets():
            text = httpjson.redact(text, secret)
        return httpjson.clean_text(text, 300)


# --------------------------------------------------------------------------- helpers


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` present in ``headers`` (case-insensitive lookup)."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value.strip()
    return None


def signature_ok(secret: bytes, raw: bytes, signature: str | None) -> bool:
    """True if ``signature`` is the hex HMAC-SHA256 of ``raw`` under ``secret``.

    The comparison is constant-time; a ``sha256=`` prefix (GitHub's style) is allowed.
    """
    if not signature:
        return False
    given = signature.strip().lower()
    if given.startswith("sha256="):
        given = given[len("sha256=") :]
    expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


def bearer_ok(token: str, authorization: str | None) -> bool:
    """True if ``authorization`` is ``Bearer <token>`` (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.encode("utf-8"), given.strip().encode("utf-8", "replace"))


def event_label(event: str | None) -> str:
    """The ``event`` label of ``webhooks_total``: a known event name, else "other"."""
    return event if event in KNOWN_EVENTS else "other"


def signed_payload(raw: bytes, content_type: str | None) -> bytes:
    """The bytes the forge signed: the body, or for a form-encoded delivery the value of
    its ``payload`` field (Forgejo and Gitea sign the JSON, not the form encoding).

    An unreadable form yields the raw body, whose signature check then fails.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return raw
    try:
        form = urllib.parse.parse_qs(raw.decode("ascii"), max_num_fields=10, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return raw
    values = form.get("payload")
    return values[0].encode("utf-8") if values and len(values) == 1 else raw


def parse_json(text: bytes) -> dict[str, Any]:
    """The JSON object in ``text``; BadRequest otherwise."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("malformed JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def want_obj(doc: Any, key: str, where: str) -> dict[str, Any]:
    """``doc[key]`` if it is an object; BadRequest naming ``where.key`` otherwise."""
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise BadRequest(f"{where}.{key} is missing or not an object")
    return value


def want_name(value: Any, what: str) -> str:
    """``value`` if it is an owner or repository name (names.is_name); else BadRequest."""
    if not names.is_name(value):
        raise BadRequest(f"{what} is not a valid name")
    return value


def want_number(value: Any, what: str) -> int:
    """``value`` if it is a positive integer (not a bool); else BadRequest."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**53:
        raise BadRequest(f"{what} must be a positive integer")
    return value


def want_sha(value: Any, what: str) -> str:
    """``value`` lower-cased if it is a full hex commit SHA; else BadRequest."""
    if not names.is_sha(value):
        raise BadRequest(f"{what} must be a full hex commit SHA (40 or 64 digits)")
    return value.lower()


def want_ref(value: Any, what: str) -> str:
    """``value`` if it is a printable git ref of at most 255 characters; else BadRequest."""
    if not isinstance(value, str) or not value or len(value) > 255 or not value.isprintable():
        raise BadRequest(f"{what} is not a valid ref")
    return value


def want_clone_url(value: Any, what: str) -> str:
    """``value`` if it is an http(s) URL without credentials; else BadRequest."""
    if not isinstance(value, str) or len(value) > 2048:
        raise BadRequest(f"{what} is not a valid URL")
    try:
        httpjson.check_url(value, what=what, exit_code=0)
    except ReviewError:
        raise BadRequest(f"{what} must be an http(s) URL without credentials") from None
    return value


def _owner_login(repository: dict[str, Any]) -> str:
    owner = want_obj(repository, "owner", "repository")
    login = owner.get("login") or owner.get("username")
    return want_name(login, "repository.owner.login")


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The delivery id (a UUID from Forgejo/Gitea), or None if absent or unusable."""
    value = _header(headers, "X-Forgejo-Delivery", "X-Gitea-Delivery")
    if value and _DELIVERY.match(value):
        return value
    return None


def mentions_re_review(body: str, bot_name: str) -> bool:
    """True if ``body`` mentions ``@bot_name`` (as a whole user name) and says ``re-review``."""
    mention = re.compile(rf"(?<![\w@/.-])@{re.escape(bot_name)}(?![\w-])", re.IGNORECASE)
    return bool(mention.search(body)) and bool(_RE_REVIEW.search(body))


# --------------------------------------------------------------------------- enqueue


def enqueue(intake: Intake, request: Any) -> Reply:
    """Submit ``request`` and turn the queue's answer into the HTTP one."""
    try:
        submission = intake.queue.submit(request)
    except ValueError as exc:  # the queue's own validation: names the field, not its value
        return Reply(400, {"error": f"invalid request: {exc}"})
    except Exception as exc:
        intake.log(
            f"auto-review: queue write failed: {type(exc).__name__}: {intake.safe(str(exc))}"
        )
        return Reply(
            503,
            {"error": "the job queue is unavailable, try again later"},
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    status = getattr(submission, "status", None)
    if status == "accepted":
        return Reply(202, {"job_id": submission.job_id})
    if status == "duplicate":
        intake.metrics.inc("duplicates_total")
        body: dict[str, Any] = {"duplicate": True}
        if getattr(submission, "job_id", None) is not None:
            body["job_id"] = submission.job_id
        return Reply(200, body)
    if status == "full":
        return Reply(
            503,
            {"error": "the job queue is full, try again later"},
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    intake.log(f"auto-review: the queue answered an unknown status {status!r}")
    return Reply(
        503, {"error": "the job queue is unavailable"}, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


# --------------------------------------------------------------------------- webhooks


def handle_webhook(intake: Intake, headers: Mapping[str, str], raw: bytes) -> Reply:
    """``POST /webhooks/forgejo``: verify, classify, maybe enqueue (see the module doc)."""
    event = _header(headers, "X-Forgejo-Event", "X-Gitea-Event")
    event = event.lower() if event else None
    intake.metrics.inc("webhooks_total", {"event": event_label(event)})
    signature = _header(headers, "X-Forgejo-Signature", "X-Gitea-Signature")
    payload = signed_payload(raw, headers.get("Content-Type"))
    if not signature_ok(intake.webhook_secret, payload, signature):
        intake.metrics.inc("signature_failures_total")
        return Reply(401, {"error": "missing or invalid signature"})
    if not event:
        return Reply(400, {"error": "missing X-Forgejo-Event header"})
    try:
        doc = parse_json(payload)
        if event == "ping":
            return Reply(200, {"pong": True})
        if event == "pull_request":
            return _pull_request(intake, doc, delivery_id(headers))
        if event == "issue_comment":
            return _issue_comment(intake, doc, delivery_id(headers))
    except BadRequest as exc:
        return Reply(400, {"error": str(exc)})
    if event == "push":
        return Reply(200, {"ignored": "push events do not trigger reviews"})
    return Reply(200, {"ignored": f"event {event_label(event)} does not trigger reviews"})


def is_wip_title(title: Any) -> bool:
    """True if ``title`` starts with a work-in-progress prefix (see WIP_PREFIXES)."""
    return isinstance(title, str) and title.lstrip().upper().startswith(WIP_PREFIXES)


def _is_draft(pull: dict[str, Any]) -> bool:
    return pull.get("draft") is True or is_wip_title(pull.get("title"))


def _became_ready(doc: dict[str, Any], pull: dict[str, Any]) -> bool:
    """An ``edited`` event whose title change took the PR out of draft."""
    changes = doc.get("changes")
    title = changes.get("title") if isinstance(changes, dict) else None
    old = title.get("from") if isinstance(title, dict) else None
    return is_wip_title(old) and not _is_draft(pull)


def _pull_request(intake: Intake, doc: dict[str, Any], delivery: str | None) -> Reply:
    action = doc.get("action")
    pull = doc.get("pull_request")
    if action == "edited" and isinstance(pull, dict) and _became_ready(doc, pull):
        action = "ready_for_review"  # Forgejo's way of saying it (see the module doc)
    if action not in PR_ACTIONS:
        shown = action if isinstance(action, str) and _ACTION.match(action) else "?"
        return Reply(200, {"ignored": f"pull_request action {shown} does not trigger reviews"})
    pull = want_obj(doc, "pull_request", "payload")
    repository = want_obj(doc, "repository", "payload")
    if _is_draft(pull) and action != "ready_for_review":
        return Reply(200, {"ignored": "draft pull request"})
    if pull.get("state") == "closed" or pull.get("merged") is True:
        return Reply(200, {"ignored": "pull request is closed"})
    head = want_obj(pull, "head", "pull_request")
    base = want_obj(pull, "base", "pull_request")
    number = pull.get("number", doc.get("number"))
    request = intake.job_request(
        owner=_owner_login(repository),
        repo=want_name(repository.get("name"), "repository.name"),
        pr_number=want_number(number, "pull_request.number"),
        head_sha=want_sha(head.get("sha"), "pull_request.head.sha"),
        base_ref=want_ref(base.get("ref"), "pull_request.base.ref"),
        clone_url=want_clone_url(repository.get("clone_url"), "repository.clone_url"),
        reason=f"pull_request:{action}",
        delivery_id=delivery,
    )
    return enqueue(intake, request)


def _issue_comment(intake: Intake, doc: dict[str, Any], delivery: str | None) -> Reply:
    if doc.get("action") != "created":
        return Reply(200, {"ignored": "only new comments are read"})
    issue = want_obj(doc, "issue", "payload")
    if issue.get("pull_request") is None and doc.get("is_pull") is not True:
        return Reply(200, {"ignored": "comment on an issue, not a pull request"})
    comment = want_obj(doc, "comment", "payload")
    body = comment.get("body")
    if not isinstance(body, str) or not mentions_re_review(body, intake.bot_name):
        return Reply(200, {"ignored": "comment does not ask for a re-review"})
    author = comment.get("user")
    if isinstance(author, dict) and str(author.get("login", "")).lower() == intake.bot_name.lower():
        return Reply(200, {"ignored": "comment by the bot itself"})
    if issue.get("state") == "closed":
        return Reply(200, {"ignored": "pull request is closed"})
    repository = want_obj(doc, "repository", "payload")
    owner = _owner_login(repository)
    repo = want_name(repository.get("name"), "repository.name")
    number = want_number(issue.get("number"), "issue.number")
    try:
        clone_url = want_clone_url(repository.get("clone_url"), "repository.clone_url")
    except BadRequest:
        clone_url = intake.forge.repo_clone_url(owner, repo)
    # Queued without a head: the worker reads the PR's current head when it runs.
    request = intake.job_request(
        owner=owner,
        repo=repo,
        pr_number=number,
        head_sha="",
        base_ref="",
        clone_url=clone_url,
        reason="issue_comment:re-review",
        delivery_id=delivery,
        force=True,
    )
    return enqueue(intake, request)
