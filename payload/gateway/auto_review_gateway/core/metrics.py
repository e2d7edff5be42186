"""Process metrics in the Prometheus text exposition format (auto_review_ prefix).

Thread-safe counters, gauges and one histogram family; no third-party client
(the gateway runs on the stdlib inside the sandbox).
"""

from __future__ import annotations

import threading

PREFIX = "auto_review_"
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, float("inf"))

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
    "verifier_dropped_total": ("counter", "Model findings the verifier pass dropped"),
    "verifier_errors_total": ("counter", "Verifier calls that failed (all findings kept)"),
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
            counts = self._hist.setdefault(key, [0.0] * (len(DURATION_BUCKETS) + 2))
            for i, bound in enumerate(DURATION_BUCKETS):
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
                        for bound, count in zip(DURATION_BUCKETS, counts, strict=False):
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


# The process's instance, for counts made far from the server (the review pipeline):
# serve installs its Metrics; elsewhere (the ``review`` command) counts go nowhere.
_installed: Metrics | None = None


def install(metrics: Metrics | None) -> None:
    """Make ``metrics`` the instance :func:`count` adds to (None: none)."""
    global _installed
    _installed = metrics


def count(name: str, value: float = 1.0, labels: dict[str, str] | None = None) -> None:
    """Add ``value`` to counter ``name`` of the installed instance, if there is one."""
    installed = _installed
    if installed is not None:
        installed.inc(name, labels, value)
