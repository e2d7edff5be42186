"""``POST /webhooks/forgejo``: Forgejo's (and Gitea's) webhook deliveries. The steps and
the answers they share with GitHub's are in :mod:`webhooks`; what is Forgejo's:

* The body is authenticated before anything else is looked at: ``X-Forgejo-Signature``
  (or ``X-Gitea-Signature``; Forgejo sends both) must be the hex HMAC-SHA256 of the raw
  body keyed with ``WEBHOOK_SECRET``, compared in constant time; otherwise 401 and
  nothing is parsed or enqueued. The event is ``X-Forgejo-Event`` / ``X-Gitea-Event``,
  the delivery id ``X-Forgejo-Delivery`` / ``X-Gitea-Delivery`` (a UUID).

  Forgejo's webhook settings have one checkbox per event *type*, and the header
  ``X-Forgejo-Event`` carries the event *family* (``HookEventType.Event()`` in
  Forgejo's ``modules/webhook/type.go``): the types ``pull_request`` and
  ``pull_request_sync`` (*Pull request synchronized*) both arrive as ``pull_request``,
  ``issue_comment`` and ``pull_request_comment`` (*Pull request comment*) both as
  ``issue_comment``; ``X-Forgejo-Event-Type`` names the type.

* ``pull_request`` with action ``closed`` (merged or not) queues a note that the PR's
  history may be forgotten in 30 days (``jobs/history.py``): no review.
* ``pull_request`` with action ``opened``, ``synchronized`` (a push to the head branch;
  GitHub calls it "synchronize", Forgejo and Gitea "synchronized"), ``reopened`` or
  ``ready_for_review`` enqueues a review of the head commit. A draft PR (``draft``,
  or a title with a work-in-progress prefix, Forgejo's ``WIP:`` / ``[WIP]``) is
  skipped, and so is a closed one. Forgejo has no ``ready_for_review``: a draft
  becomes ready by losing its prefix, which sends ``edited`` with
  ``changes.title.from`` (``ChangesPayload`` in ``modules/structs/hook.go``); an
  ``edited`` whose old title was a draft's and whose new one is not is reviewed.
* ``issue_comment`` on a pull request follows :mod:`commands` (``@bot help``, ...); a
  comment by the bot itself is ignored. Who may command is asked of the forge when the
  job runs (the collaborator permission API), not here.
* ``ping`` answers ``{"pong": true}``. Forgejo and Gitea have no ping event: their
  "Test Delivery" button sends a signed ``push`` event with a dummy commit, which is
  answered 200 ``{"ignored": ...}``, so a test delivery shows green exactly when the
  secret matches.
* anything else: 200 ``{"ignored": "<why>"}``.

Forgejo can also send the payload form-encoded (``payload=<json>``); both are read, and
for a form the signature is checked against the JSON in ``payload``, which is what the
forge signs.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from auto_review_gateway.forges.commands import command_comment, comment_author
from auto_review_gateway.forges.webhooks import (
    WebhookForge,
    first_header,
    handle_delivery,
    queue_head_review,
)
from auto_review_gateway.intake.auth import signature_ok
from auto_review_gateway.intake.endpoint import Intake, Reply
from auto_review_gateway.intake.fields import want_name, want_obj, want_owner

PR_ACTIONS = ("opened", "synchronized", "reopened", "ready_for_review")
# Forgejo's default [repository.pull-request] WORK_IN_PROGRESS_PREFIXES, compared
# case-insensitively (HasWorkInProgressPrefix).
WIP_PREFIXES = ("WIP:", "[WIP]")
# Where ``repository.owner`` keeps its name: ``login``, else ``username``.
OWNER_KEYS = ("login", "username")

_ACTION = re.compile(r"\A[A-Za-z0-9_.-]{1,100}\Z")


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


def verified_payload(secret: bytes, headers: Mapping[str, str], raw: bytes) -> bytes | None:
    """The signed JSON of a delivery whose signature is good, else None."""
    signature = first_header(headers, "X-Forgejo-Signature", "X-Gitea-Signature")
    payload = signed_payload(raw, headers.get("Content-Type"))
    return payload if signature_ok(secret, payload, signature) else None


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
    if action not in (*PR_ACTIONS, "closed"):
        shown = action if isinstance(action, str) and _ACTION.match(action) else "?"
        return Reply(200, {"ignored": f"pull_request action {shown} does not trigger reviews"})
    pull = want_obj(doc, "pull_request", "payload")
    repository = want_obj(doc, "repository", "payload")
    if _is_draft(pull) and action not in ("ready_for_review", "closed"):
        return Reply(200, {"ignored": "draft pull request"})
    closed = pull.get("state") == "closed" or pull.get("merged") is True
    if closed and action != "closed":
        return Reply(200, {"ignored": "pull request is closed"})
    head = want_obj(pull, "head", "pull_request")
    base = want_obj(pull, "base", "pull_request")
    return queue_head_review(
        intake,
        owner=want_owner(repository, OWNER_KEYS),
        repo=want_name(repository.get("name"), "repository.name"),
        repository=repository,
        number=pull.get("number", doc.get("number")),
        head=head,
        base=base,
        action=action,
        delivery=delivery,
    )


def _on_pull(issue: dict[str, Any], doc: dict[str, Any]) -> bool:
    return issue.get("pull_request") is not None or doc.get("is_pull") is True


def _author(intake: Intake, comment: dict[str, Any]) -> tuple[str, None] | str:
    return comment_author(comment, intake.bot_name)


def _issue_comment(intake: Intake, doc: dict[str, Any], delivery: str | None) -> Reply:
    return command_comment(
        intake, doc, delivery, on_pull=_on_pull, author=_author, owner_keys=OWNER_KEYS
    )


FORGEJO = WebhookForge(
    event_headers=("X-Forgejo-Event", "X-Gitea-Event"),
    delivery_headers=("X-Forgejo-Delivery", "X-Gitea-Delivery"),
    verify=verified_payload,
    bad_signature="missing or invalid signature",
    events={"pull_request": _pull_request, "issue_comment": _issue_comment},
    ignored={"push": "push events do not trigger reviews"},
)


def handle(intake: Intake, headers: Mapping[str, str], raw: bytes) -> Reply:
    """``POST /webhooks/forgejo``: verify, classify, maybe enqueue (see the module doc)."""
    return handle_delivery(FORGEJO, intake, headers, raw)
