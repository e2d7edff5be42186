"""``POST /webhooks/github``: GitHub's webhook deliveries. The steps and the answers they
share with Forgejo's are in :mod:`webhooks`; what is GitHub's:

* The raw body is authenticated first: ``X-Hub-Signature-256`` must be ``sha256=`` and
  the hex HMAC-SHA256 of the body under ``WEBHOOK_SECRET`` (constant-time compare),
  else 401 and nothing is parsed. ``X-GitHub-Event`` names the event,
  ``X-GitHub-Delivery`` (a GUID) is the delivery id the queue deduplicates on.
* ``pull_request`` with action ``opened``, ``reopened``, ``synchronize`` or
  ``ready_for_review`` queues a review of ``pull_request.head.sha``; drafts and closed
  PRs are skipped. A second delivery for a head already queued or reviewed is a
  duplicate (the queue's rule), so a repeated ``synchronize`` reviews once.
* ``issue_comment`` follows :mod:`commands`: ``created`` on a pull request
  (``issue.pull_request`` present), not by a bot (``user.type`` Bot, or the bot's own
  login). The comment's ``author_association`` goes with the job, whose worker allows
  the command when it is at least ``GITHUB_MIN_ASSOCIATION`` (default COLLABORATOR)
  and answers a one-line refusal otherwise.
* ``ping`` (sent when the webhook is created) answers ``{"pong": true}``; any other
  event 200 ``{"ignored": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auto_review_gateway.forges.commands import command_comment, comment_author
from auto_review_gateway.forges.github.client import ASSOCIATIONS
from auto_review_gateway.forges.webhooks import (
    WebhookForge,
    handle_delivery,
    queue_head_review,
)
from auto_review_gateway.intake.auth import signature_ok
from auto_review_gateway.intake.endpoint import Intake, Reply
from auto_review_gateway.intake.fields import want_obj, want_repository

PR_ACTIONS = ("opened", "reopened", "synchronize", "ready_for_review")
OWNER_KEYS = ("login",)  # where ``repository.owner`` keeps its name


def verified_payload(secret: bytes, headers: Mapping[str, str], raw: bytes) -> bytes | None:
    """The body of a delivery whose ``X-Hub-Signature-256`` is good, else None."""
    signature = (headers.get("X-Hub-Signature-256") or "").strip()
    if signature.startswith("sha256=") and signature_ok(secret, raw, signature):
        return raw
    return None


def _pull_request(intake: Intake, doc: dict[str, Any], delivery: str | None) -> Reply:
    action = doc.get("action")
    if action not in (*PR_ACTIONS, "closed"):
        shown = action if isinstance(action, str) and action.isidentifier() else "?"
        return Reply(200, {"ignored": f"pull_request action {shown} does not trigger reviews"})
    pull = want_obj(doc, "pull_request", "payload")
    if action != "closed" and pull.get("draft") is True:
        return Reply(200, {"ignored": "draft pull request"})
    if action != "closed" and (pull.get("state") == "closed" or pull.get("merged") is True):
        return Reply(200, {"ignored": "pull request is closed"})
    owner, repo, repository = want_repository(doc, OWNER_KEYS)
    return queue_head_review(
        intake,
        owner=owner,
        repo=repo,
        repository=repository,
        number=pull.get("number"),
        head=want_obj(pull, "head", "pull_request"),
        base=want_obj(pull, "base", "pull_request"),
        action=action,
        delivery=delivery,
    )


def association_ok(value: Any, minimum: str) -> bool:
    """True if ``author_association`` ``value`` is ``minimum`` or more trusted."""
    if value not in ASSOCIATIONS or minimum not in ASSOCIATIONS:
        return False
    return ASSOCIATIONS.index(value) <= ASSOCIATIONS.index(minimum)


def _on_pull(issue: dict[str, Any], doc: dict[str, Any]) -> bool:
    return isinstance(issue.get("pull_request"), dict)


def _author(intake: Intake, comment: dict[str, Any]) -> tuple[str, str] | str:
    """The author's login and ``author_association``, or why the comment is not read."""
    user = comment.get("user")
    if isinstance(user, dict) and user.get("type") == "Bot":
        return "comment by a bot"
    who = comment_author(comment, intake.bot_name)
    if isinstance(who, str):
        return who
    association = comment.get("author_association")
    if association not in ASSOCIATIONS:
        return "comment has no known author_association"
    return who[0], association


def _issue_comment(intake: Intake, doc: dict[str, Any], delivery: str | None) -> Reply:
    return command_comment(
        intake, doc, delivery, on_pull=_on_pull, author=_author, owner_keys=OWNER_KEYS
    )


GITHUB = WebhookForge(
    event_headers=("X-GitHub-Event",),
    delivery_headers=("X-GitHub-Delivery",),
    delivery_prefix="github:",
    verify=verified_payload,
    bad_signature="missing or invalid X-Hub-Signature-256",
    events={"pull_request": _pull_request, "issue_comment": _issue_comment},
)


def handle(intake: Intake, headers: Mapping[str, str], raw: bytes) -> Reply:
    """``POST /webhooks/github``: verify, classify, maybe enqueue (see the module doc)."""
    return handle_delivery(GITHUB, intake, headers, raw)
