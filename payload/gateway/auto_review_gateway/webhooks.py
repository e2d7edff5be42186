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

Enqueueing answers as :func:`intake.enqueue` says (202 queued, 200 duplicate, 503 with
``Retry-After``). A body that is not a JSON object, or lacks a field a review needs,
answers 400 (after the signature check, never before). No answer ever carries a secret
or a stack trace.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from auto_review_gateway.intake import Intake, Reply, enqueue
from auto_review_gateway.request_auth import signature_ok
from auto_review_gateway.request_fields import (
    BadRequest,
    parse_json,
    want_clone_url,
    want_name,
    want_number,
    want_obj,
    want_ref,
    want_sha,
)

PR_ACTIONS = ("opened", "synchronized", "reopened", "ready_for_review")
# Forgejo's default [repository.pull-request] WORK_IN_PROGRESS_PREFIXES, compared
# case-insensitively (HasWorkInProgressPrefix).
WIP_PREFIXES = ("WIP:", "[WIP]")
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


# --------------------------------------------------------------------------- helpers


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` present in ``headers`` (case-insensitive lookup)."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value.strip()
    return None


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
