"""The gateway's Prometheus exposition."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payload" / "gateway"))
from auto_review_gateway.core.metrics import Metrics


def test_counters_gauges_and_histograms_render_in_text_format() -> None:
    m = Metrics()
    m.inc("webhooks_total", {"event": "pull_request"})
    m.inc("webhooks_total", {"event": "pull_request"})
    m.inc("reviews_failed_total", {"cause": 'clone "x"'})
    m.set("queue_depth", 3)
    m.observe("review_duration_seconds", 2.5)
    text = m.render()
    assert 'auto_review_webhooks_total{event="pull_request"} 2' in text
    assert 'auto_review_reviews_failed_total{cause="clone \\"x\\""} 1' in text
    assert "auto_review_queue_depth 3" in text
    assert 'auto_review_review_duration_seconds_bucket{le="1"} 0' in text
    assert 'auto_review_review_duration_seconds_bucket{le="5"} 1' in text
    assert 'auto_review_review_duration_seconds_bucket{le="+Inf"} 1' in text
    assert "auto_review_review_duration_seconds_count 1" in text
    assert "# TYPE auto_review_signature_failures_total counter" in text
    assert "auto_review_signature_failures_total 0" in text  # visible before the first event


def test_undeclared_or_mistyped_metrics_are_refused() -> None:
    m = Metrics()
    with pytest.raises(KeyError):
        m.inc("made_up_total")
    with pytest.raises(KeyError):
        m.set("webhooks_total", 1)
