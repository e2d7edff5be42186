"""What each path and method answers (every answer is JSON except /metrics):

========================  ======  =====================================================
``/healthz``              GET     200 ``{"status": "ok"}`` while the process serves
``/readyz``               GET     200 when the forge answers ``GET /api/v1/version``
                                  (cached for READY_TTL seconds), else 503 with the reason
``/version``              GET     200 ``{"version": ...}``
``/metrics``              GET     200 Prometheus text format 0.0.4
``/info``                 GET     200 ``{"version", "bundle_digest", "isolation", "queue"}``
``/jobs``                 GET     200 ``{"jobs": [...]}``: the newest jobs with their state,
                                  attempts and last error (secrets redacted)
``/webhooks/forgejo``     POST    see :mod:`auto_review_gateway.forges.forgejo.webhooks`
``/webhooks/github``      POST    instead of ``/webhooks/forgejo`` on a GitHub gateway,
                                  see :mod:`auto_review_gateway.forges.github.webhooks`
``/reviews/ci``           POST    see :mod:`auto_review_gateway.web.ci`
========================  ======  =====================================================

:class:`Gateway` is transport-free: :mod:`handler` reads the requests, answers
404, 405 and 501 itself, and sends what a route returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from auto_review_gateway import __version__
from auto_review_gateway.core.log import log
from auto_review_gateway.forges.forgejo import webhooks as forgejo_webhooks
from auto_review_gateway.intake.endpoint import Intake, Reply
from auto_review_gateway.web.readiness import Readiness, forge_probe

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Route = Callable[[Mapping[str, str], bytes], Reply]


class Gateway:
    """The application: what each path and method answers. Transport-free, so it can be
    called directly; :class:`GatewayServer` feeds it HTTP requests."""

    def __init__(
        self,
        intake: Intake,
        metrics: Any,
        *,
        readiness: Readiness | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.intake = intake
        self.metrics = metrics
        self.readiness = readiness or Readiness(forge_probe(intake), redact=intake.safe)
        env = os.environ if environ is None else environ
        self.bundle_digest = env.get("AUTO_REVIEW_BUNDLE_DIGEST") or None
        self.isolation = env.get("AUTO_REVIEW_ISOLATION") or "unknown"
        build = {"version": __version__, "bundle_digest": self.bundle_digest or "",
                 "isolation": self.isolation}  # fmt: skip
        self.metrics.set("build_info", 1, build)
        self.routes: dict[str, dict[str, Route]] = {
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/version": {"GET": self.version},
            "/metrics": {"GET": self.metrics_text},
            "/info": {"GET": self.info},
            "/jobs": {"GET": self.jobs},
            "/webhooks/forgejo": {"POST": self.webhook},
            "/reviews/ci": {"POST": self.ci},
        }
        if getattr(intake.forge, "kind", "") == "github":  # one forge per gateway
            del self.routes["/webhooks/forgejo"]
            self.routes["/webhooks/github"] = {"POST": self.github_webhook}

    def healthz(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """The process is up and serving."""
        return Reply(200, {"status": "ok"})

    def readyz(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """200 if the forge answered recently, else 503 with why."""
        ready, reason = self.readiness.check()
        if ready:
            return Reply(200, {"status": "ready"})
        return Reply(503, {"status": "not ready", "reason": reason}, {"Retry-After": "5"})

    def version(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """The gateway's version."""
        return Reply(200, {"version": __version__})

    def metrics_text(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Prometheus text, with the queue depth, its oldest job and readiness read now."""
        try:
            queue = self.intake.queue
            self.metrics.set("queue_depth", queue.depth())
            for name, read in (
                ("jobs_waiting_retry", getattr(queue, "retrying", None)),
                ("oldest_pending_job_age_seconds", getattr(queue, "oldest_pending_age", None)),
            ):
                if read is not None:
                    self.metrics.set(name, read())
        except Exception as exc:
            log(f"auto-review: reading the queue depth failed: {type(exc).__name__}")
        # the same cached probe as /readyz (at most one every READY_TTL seconds)
        self.metrics.set("ready", 1 if self.readiness.check()[0] else 0)
        return Reply(200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    def info(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Version, bundle digest, isolation and the queue's counts."""
        try:
            counts: Any = self.intake.queue.counts()
        except Exception as exc:
            log(f"auto-review: reading the queue counts failed: {type(exc).__name__}")
            counts = None
        return Reply(
            200,
            {
                "version": __version__,
                "bundle_digest": self.bundle_digest,
                "isolation": self.isolation,
                "queue": counts,
            },
        )

    def jobs(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """The newest jobs: id, PR, state, attempts, last error, times."""
        recent = getattr(self.intake.queue, "recent", None)
        if recent is None:
            return Reply(404, {"error": "not found"})
        try:
            rows = recent()
        except Exception as exc:
            log(f"auto-review: reading the jobs failed: {type(exc).__name__}")
            return Reply(503, {"error": "the job queue is unavailable"}, {"Retry-After": "5"})
        for row in rows:
            if row.get("error"):
                row["error"] = self.intake.safe(str(row["error"]))
        return Reply(200, {"jobs": rows})

    def webhook(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /webhooks/forgejo``."""
        return forgejo_webhooks.handle(self.intake, headers, body)

    def github_webhook(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /webhooks/github``."""
        from auto_review_gateway.forges.github import webhooks as github_webhooks

        return github_webhooks.handle(self.intake, headers, body)

    def ci(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /reviews/ci``."""
        from auto_review_gateway.web import ci

        return ci.handle_ci(self.intake, headers, body)
