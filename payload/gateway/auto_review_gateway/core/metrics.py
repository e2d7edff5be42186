"""Process metrics in the Prometheus text exposition format (auto_review_ prefix).

Thread-safe counters, gauges and histograms; no third-party client (the gateway runs on
the stdlib inside the sandbox). ``serve`` installs its instance (:func:`install`) so that code
far from the server (the one HTTP-out path, the LLM reviewer) records into it through
:func:`installed`; elsewhere (``review``, tests) nothing is installed and nothing is
recorded. deploy/prometheus/auto-review.rules.yaml and deploy/grafana/ use these names.
"""

from __future__ import annotations

import threading

PREFIX = "auto_review_"
INF = float("inf")
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, INF)
# A chat completion takes seconds to minutes (LLM_TIMEOUT defaults to 120 s, a review's
# LLM_DEADLINE to 600 s); a forge API call takes milliseconds to a few seconds.
LLM_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 240.0, 600.0, INF)
FORGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, INF)

# name -> (type, help); every metric the gateway exports is declared here
METRICS = {
    "webhooks_total": ("counter", "Webhook deliveries received, by event"),
    "signature_failures_total": ("counter", "Webhook deliveries refused for a bad signature"),
    "duplicates_total": ("counter", "Deliveries or reviews ignored as duplicates"),
    "reviews_started_total": ("counter", "Reviews started"),
    "reviews_succeeded_total": ("counter", "Reviews that ran and were posted"),
    "reviews_failed_total": ("counter", "Reviews that failed, by cause"),
    "review_duration_seconds": ("histogram", "Wall time of a review job"),
    "queue_depth": ("gauge", "Jobs pending or running"),
    "job_retries_total": ("counter", "Failed tries of a job that was queued again, by cause"),
    "jobs_waiting_retry": ("gauge", "Pending jobs that have failed before (waiting to retry)"),
    "job_attempts_max": ("gauge", "The most tries any job has had so far"),
    "last_job_error_timestamp_seconds": (
        "gauge",
        "When a job last failed (retried or not), by cause (details: GET /jobs)",
    ),
    "oldest_pending_job_age_seconds": (
        "gauge",
        "Age of the oldest pending job (waiting for a worker or a retry), 0 when none",
    ),
    "llm_request_duration_seconds": (
        "histogram",
        "Wall time of one HTTP request to the LLM server (each try, failed ones too)",
    ),
    "llm_errors_total": (
        "counter",
        "LLM requests or answers that failed, by cause (timeout, connection, rate_limited,"
        " client_error, server_error, bad_answer, other; invalid_answer, cut_off, content_filter)",
    ),
    "llm_tokens_total": (
        "counter",
        "Tokens the LLM server reported in its answers' usage, by kind (prompt, completion)",
    ),
    "forge_request_duration_seconds": (
        "histogram",
        "Wall time of one HTTP request to the forge API (each try, failed ones too)",
    ),
    "forge_errors_total": (
        "counter",
        "Forge API requests that failed, by cause (timeout, connection, rate_limited,"
        " client_error, server_error, bad_answer, other)",
    ),
    "ready": ("gauge", "1 when the forge answered the readiness probe (as /readyz), else 0"),
    "build_info": (
        "gauge",
        "Always 1; the labels name the gateway's version, bundle digest and sandbox isolation",
    ),
    "start_time_seconds": ("gauge", "When the gateway process started (Unix time)"),
}
# Label values known in advance are exported at 0 from the start: Prometheus' rate() and
# increase() see an increase only from a sample before it, so a series born at 1 would
# hide the first failure of its cause (Prometheus' instrumentation practices: "Avoid
# missing metrics").
JOB_CAUSES = ("clone", "bad_ref", "reviewer", "config", "post", "usage", "internal")
HTTP_CAUSES = (
    "timeout",
    "connection",
    "rate_limited",
    "client_error",
    "server_error",
    "bad_answer",
    "other",
)
KNOWN_LABELS = {
    "reviews_failed_total": ("cause", (*JOB_CAUSES, "interrupted")),
    "job_retries_total": ("cause", JOB_CAUSES),
    "llm_errors_total": ("cause", (*HTTP_CAUSES, "invalid_answer", "cut_off", "content_filter")),
    "forge_errors_total": ("cause", HTTP_CAUSES),
    "llm_tokens_total": ("kind", ("prompt", "completion")),
}
# histogram name -> its bucket bounds (default DURATION_BUCKETS)
BUCKETS = {
    "llm_request_duration_seconds": LLM_BUCKETS,
    "forge_request_duration_seconds": FORGE_BUCKETS,
}

Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = [*labels, *([extra] if extra else [])]
    if not items:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in items
    )
    return "{" + body + "}"


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """All of the gateway's metrics; one instance per server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, Labels], float] = {}
        self._hist: dict[tuple[str, Labels], list[float]] = {}  # bucket counts, then sum, count
        for name, (label, values) in KNOWN_LABELS.items():
            for value in values:
                self._values[(name, ((label, value),))] = 0.0

    def _check(self, name: str, kind: str) -> None:
        if METRICS.get(name, ("",))[0] != kind:
            raise KeyError(f"{name} is not a declared {kind}")

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        """Add `value` to a counter."""
        self._check(name, "counter")
        key = (name, _labels(labels))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + value

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """Set a gauge."""
        self._check(name, "gauge")
        with self._lock:
            self._values[(name, _labels(labels))] = float(value)

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """Record one observation in a histogram."""
        self._check(name, "histogram")
        key = (name, _labels(labels))
        with self._lock:
            bounds = BUCKETS.get(name, DURATION_BUCKETS)
            counts = self._hist.setdefault(key, [0.0] * (len(bounds) + 2))
            for i, bound in enumerate(bounds):
                if value <= bound:
                    counts[i] += 1
            counts[-2] += value
            counts[-1] += 1

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a counter or gauge (0 if never set): for tests and /info."""
        with self._lock:
            return self._values.get((name, _labels(labels)), 0.0)

    def render(self) -> str:
        """The exposition text served at /metrics."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in METRICS.items():
                full = PREFIX + name
                lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
                if kind == "histogram":
                    for (n, labels), counts in sorted(self._hist.items()):
                        if n != name:
                            continue
                        bounds = BUCKETS.get(name, DURATION_BUCKETS)
                        for bound, count in zip(bounds, counts, strict=False):
                            le = ("le", _num(bound))
                            lines.append(f"{full}_bucket{_fmt_labels(labels, le)} {_num(count)}")
                        lines.append(f"{full}_sum{_fmt_labels(labels)} {_num(counts[-2])}")
                        lines.append(f"{full}_count{_fmt_labels(labels)} {_num(counts[-1])}")
                    continue
                series = [(lb, v) for (n, lb), v in sorted(self._values.items()) if n == name]
                if not series:  # scrapers see every metric from the first scrape on
                    series = [((), 0.0)]
                for labels, value in series:
                    lines.append(f"{full}{_fmt_labels(labels)} {_num(value)}")
        return "\n".join(lines) + "\n"


_installed: Metrics | None = None


def install(metrics: Metrics | None) -> None:
    """Make ``metrics`` the process's instance for :func:`installed` (None: no more)."""
    global _installed
    _installed = metrics


def installed() -> Metrics | None:
    """The instance ``serve`` installed, or None (then callers record nothing)."""
    return _installed
