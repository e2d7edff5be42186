"""The steps every forge's webhook route takes, in this order: count the delivery,
verify its signature, read the event, parse the body, take the delivery id the queue
deduplicates on, hand the event to the forge's handler (which enqueues, for a
``pull_request`` through :func:`queue_head_review`), answer.

A forge supplies only what differs, as a :class:`WebhookForge`: its header names, its
signature scheme, its table of events (``forgejo/webhooks.py``, ``github/webhooks.py``).
The answers are the same for both:

* 401 when the signature is missing or wrong; nothing is parsed or enqueued;
* 400 when the event header is missing, the body is not a JSON object, or it lacks a
  field a review needs (after the signature check, never before);
* 200 ``{"pong": true}`` for ``ping``; 200 ``{"ignored": "<why>"}`` for an event the
  forge's table does not hold, or an event or action that does not trigger a review;
* what :func:`intake.enqueue` answers when a review is queued;
* with ``AR_TRIGGER=ci``, 200 ``{"recorded": "<what>"}`` for a ``pull_request`` that
  would have been queued: reviews then start from ``POST /reviews/ci`` (a CI job, after
  the build) and from commands in comments, never from the push itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auto_review_gateway.intake.endpoint import Intake, Reply, enqueue
from auto_review_gateway.intake.fields import (
    BadRequest,
    parse_json,
    want_clone_url,
    want_number,
    want_ref,
    want_sha,
)

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

_DELIVERY = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")

# An event's handler: (intake, the parsed body, the delivery id) -> the answer.
EventHandler = Callable[[Intake, dict[str, Any], str | None], Reply]


@dataclass(frozen=True)
class WebhookForge:
    """What one forge's webhook route differs in; :func:`handle_delivery` takes the steps.

    ``verify(secret, headers, raw)`` returns the bytes to parse when the delivery's
    signature is good, else None. The first of ``event_headers`` is the one a 400 names.
    """

    event_headers: tuple[str, ...]
    delivery_headers: tuple[str, ...]
    verify: Callable[[bytes, Mapping[str, str], bytes], bytes | None]
    bad_signature: str
    events: Mapping[str, EventHandler]
    ignored: Mapping[str, str] = field(default_factory=dict)
    delivery_prefix: str = ""


def first_header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` present in ``headers`` (case-insensitive lookup), stripped."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value.strip()
    return None


def event_label(event: str | None) -> str:
    """The ``event`` label of ``webhooks_total``: a known event name, else "other"."""
    return event if event in KNOWN_EVENTS else "other"


def delivery_id(forge: WebhookForge, headers: Mapping[str, str]) -> str | None:
    """The delivery id the queue deduplicates on, or None if absent or unusable."""
    value = first_header(headers, *forge.delivery_headers)
    if value and _DELIVERY.match(value):
        return forge.delivery_prefix + value
    return None


def handle_delivery(
    forge: WebhookForge, intake: Intake, headers: Mapping[str, str], raw: bytes
) -> Reply:
    """One webhook delivery to ``forge``'s route: verify, classify, maybe enqueue."""
    event = first_header(headers, *forge.event_headers)
    event = event.lower() if event else None
    intake.metrics.inc("webhooks_total", {"event": event_label(event)})
    payload = forge.verify(intake.webhook_secret, headers, raw)
    if payload is None:
        intake.metrics.inc("signature_failures_total")
        return Reply(401, {"error": forge.bad_signature})
    if not event:
        return Reply(400, {"error": f"missing {forge.event_headers[0]} header"})
    try:
        doc = parse_json(payload)
        if event == "ping":
            return Reply(200, {"pong": True})
        handler = forge.events.get(event)
        if handler is not None:
            return handler(intake, doc, delivery_id(forge, headers))
    except BadRequest as exc:
        return Reply(400, {"error": str(exc)})
    why = forge.ignored.get(event, f"event {event_label(event)} does not trigger reviews")
    return Reply(200, {"ignored": why})


def queue_head_review(
    intake: Intake,
    *,
    owner: str,
    repo: str,
    repository: dict[str, Any],
    number: Any,
    head: dict[str, Any],
    base: dict[str, Any],
    action: str,
    delivery: str | None,
) -> Reply:
    """Queue the review of a ``pull_request`` event's head commit, once the forge's handler
    has decided it is due and checked the owner and the repository: the number, head SHA,
    base ref and clone URL are checked here, in that order (BadRequest). With
    ``AR_TRIGGER=ci`` the checked event is recorded (logged and answered), not queued.

    ``closed`` (merged or not) queues a note, whatever the trigger: the worker marks the
    PR's history, forgotten 30 days later (``jobs/history.py``); no review, no status."""
    closed = action == "closed"
    request = intake.job_request(
        owner=owner,
        repo=repo,
        pr_number=want_number(number, "pull_request.number"),
        head_sha=want_sha(head.get("sha"), "pull_request.head.sha"),
        base_ref=want_ref(base.get("ref"), "pull_request.base.ref"),
        clone_url=want_clone_url(repository.get("clone_url"), "repository.clone_url"),
        reason=f"pull_request:{action}",
        delivery_id=delivery,
        force=closed,
    )
    if intake.trigger == "ci" and not closed:
        what = f"{request.pr} at {request.head_sha} ({action}); reviews start from /reviews/ci"
        intake.log(f"auto-review: recorded {what}")
        return Reply(200, {"recorded": what})
    return enqueue(intake, request)
