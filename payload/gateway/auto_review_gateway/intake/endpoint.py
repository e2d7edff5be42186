"""What every POST endpoint works with: its dependencies (:class:`Intake`), its answer
(:class:`Reply`), and the job queue's answer turned into the HTTP one (:func:`enqueue`).

Enqueueing answers 202 ``{"job_id": N}`` (accepted), 200 ``{"duplicate": true}`` (that
delivery, or that head of that PR, is already queued or reviewed) or 503 with
``Retry-After`` (queue full, or the queue could not be written). No answer ever carries
a secret or a stack trace.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from auto_review_gateway.core import httpjson

RETRY_AFTER_SECONDS = 30


@dataclass
class Reply:
    """An answer: status, JSON body (or text for ``content_type`` text/*), extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class _Submission(Protocol):
    status: str
    job_id: int | None


class JobQueueLike(Protocol):
    """The part of :class:`auto_review_gateway.jobs.queue.JobQueue` the HTTP side uses."""

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


class ForgeSettings(Protocol):
    """The part of a forge's settings the POST side uses (Forgejo's ``ForgejoConfig`` and
    GitHub's ``GitHubConfig`` both have it): declared here so that this stage imports no
    forge."""

    @property
    def token(self) -> str:
        """The forge's token, to keep out of every message."""
        ...

    def repo_clone_url(self, owner: str, repo: str) -> str:
        """Where the forge serves ``owner/repo`` over HTTPS."""
        ...


@dataclass
class Intake:
    """Everything the POST endpoints need: secrets, the forge, the queue, the metrics.

    ``job_request`` is the class of the queue's requests (``jobs.JobRequest``), passed in
    so that this module does not import the queue.
    """

    webhook_secret: bytes
    forge: ForgeSettings
    queue: JobQueueLike
    job_request: Callable[..., Any]
    metrics: MetricsLike
    bot_name: str = "auto-review"
    ci_token: str | None = None
    trigger: str = "webhook"  # AR_TRIGGER: "ci" makes pull_request webhooks record only
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
