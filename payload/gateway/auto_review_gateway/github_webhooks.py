"""``POST /webhooks/github``: GitHub's webhook deliveries (see :mod:`webhooks` for the
Forgejo route, :mod:`intake` for the shared answers: 202 queued, 200 duplicate, 503 full;
200 ``{"ignored": ...}`` for what does not trigger a review).

* The raw body is authenticated first: ``X-Hub-Signature-256`` must be ``sha256=`` and
  the hex HMAC-SHA256 of the body under ``WEBHOOK_SECRET`` (constant-time compare),
  else 401 and nothing is parsed. ``X-GitHub-Event`` names the event,
  ``X-GitHub-Delivery`` (a GUID) is the delivery id the queue deduplicates on.
* ``pull_request`` with action ``opened``, ``reopened``, ``synchronize`` or
  ``ready_for_review`` queues a review of ``pull_request.head.sha``; drafts and closed
  PRs are skipped. A second delivery for a head already queued or reviewed is a
  duplicate (the queue's rule), so a repeated ``synchronize`` reviews once.
* ``issue_comment`` ``created`` on a pull request (``issue.pull_request`` present) that
  mentions ``@<AR_BOT_NAME>`` and says ``re-review``, by an author whose
  ``author_association`` is at least ``GITHUB_MIN_ASSOCIATION`` (default COLLABORATOR),
  queues a forced review of the PR's current head (read when the job runs).
* ``ping`` (sent when the webhook is created) answers ``{"pong": true}``; any other
  event 200 ``{"ignored": ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from auto_review_gateway import webhooks
from auto_review_gateway.github import ASSOCIATIONS
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

PR_ACTIONS = ("opened", "reopened", "synchronize", "ready_for_review")
_DELIVERY = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """``X-GitHub-Delivery``, or None if absent or unusable."""
    value = (headers.get("X-GitHub-Delivery") or "").strip()
    return f"github:{value}" if _DELIVERY.match(value) else None


def handle(intake: Intake, headers: Mapping[str, str], raw: bytes) -> Reply:
    """``POST /webhooks/github``: verify, classify, maybe enqueue (see the module doc)."""
    event = (headers.get("X-GitHub-Event") or "").strip().lower() or None
    intake.metrics.inc("webhooks_total", {"event": webhooks.event_label(event)})
    signature = (headers.get("X-Hub-Signature-256") or "").strip()
    if not signature.startswith("sha256=") or not signature_ok(
        intake.webhook_secret, raw, signature
    ):
        intake.metrics.inc("signature_failures_total")
        return Reply(401, {"error": "missing or invalid X-Hub-Signature-256"})
    if not event:
        return Reply(400, {"error": "missing X-GitHub-Event header"})
    try:
        doc = parse_json(raw)
        if event == "ping":
            return Reply(200, {"pong": True})
        if event == "pull_request":
            return _pull_request(intake, doc, delivery_id(headers))
        if event == "issue_comment":
            return _issue_comment(intake, doc, delivery_id(headers))
    except BadRequest as exc:
        return Reply(400, {"error": str(exc)})
    return Reply(200, {"ignored": f"event {webhooks.event_label(event)} does not trigger reviews"})


def _repo(doc: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    repository = want_obj(doc, "repository", "payload")
    owner = want_obj(repository, "owner", "repository")
    return (
        want_name(owner.get("login"), "repository.owner.login"),
        want_name(repository.get("name"), "repository.name"),
        repository,
    )


def _pull_request(intake: Intake, doc: dict[str, Any], delivery: str | None) -> Reply:
    action = doc.get("action")
    if action not in PR_ACTIONS:
        shown = action if isinstance(action, str) and action.isidentifier() else "?"
        return Reply(200, {"ignored": f"pull_request action {shown} does not trigger reviews"})
    pull = want_obj(doc, "pull_request", "payload")
    if pull.get("draft") is True:
        return Reply(200, {"ignored": "draft pull request"})
    if pull.get("state") == "closed" or pull.get("merged") is True:
        return Reply(200, {"ignored": "pull request is closed"})
    owner, repo, repository = _repo(doc)
    head = want_obj(pull, "head", "pull_request")
    base = want_obj(pull, "base", "pull_request")
    request = intake.job_request(
        owner=owner,
        repo=repo,
        pr_number=want_number(pull.get("number"), "pull_request.number"),
        head_sha=want_sha(head.get("sha"), "pull_request.head.sha"),
        base_ref=want_ref(base.get("ref"), "pull_request.base.ref"),
        clone_url=want_clone_url(repository.get("clone_url"), "repository.clone_url"),
        reason=f"pull_request:{action}",
        delivery_id=delivery,
    )
    return enqueue(intake, request)


def association_ok(value: Any, minimum: str) -> bool:
    """True if ``author_association`` ``value`` is ``minimum`` or more trusted."""
    if value not in ASSOCIATIONS or minimum not in ASSOCIATIONS:
        return False
    return ASSOCIATIONS.index(value) <= ASSOCIATIONS.index(minimum)


def _issue_comment(intake: Intake, doc: dict[str, Any], delivery: str | None) -> Reply:
    if doc.get("action") != "created":
        return Reply(200, {"ignored": "only new comments are read"})
    issue = want_obj(doc, "issue", "payload")
    if not isinstance(issue.get("pull_request"), dict):
        return Reply(200, {"ignored": "comment on an issue, not a pull request"})
    comment = want_obj(doc, "comment", "payload")
    body = comment.get("body")
    if not isinstance(body, str) or not webhooks.mentions_re_review(body, intake.bot_name):
        return Reply(200, {"ignored": "comment does not ask for a re-review"})
    minimum = getattr(intake.forge, "min_association", "COLLABORATOR")
    if not association_ok(comment.get("author_association"), minimum):
        return Reply(200, {"ignored": f"comment author is less than {minimum}"})
    if issue.get("state") == "closed":
        return Reply(200, {"ignored": "pull request is closed"})
    owner, repo, repository = _repo(doc)
    try:
        clone_url = want_clone_url(repository.get("clone_url"), "repository.clone_url")
    except BadRequest:
        clone_url = intake.forge.repo_clone_url(owner, repo)
    request = intake.job_request(
        owner=owner,
        repo=repo,
        pr_number=want_number(issue.get("number"), "issue.number"),
        head_sha="",
        base_ref="",
        clone_url=clone_url,
        reason="issue_comment:re-review",
        delivery_id=delivery,
        force=True,
    )
    return enqueue(intake, request)
