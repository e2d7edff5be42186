"""What the gateway records of its calls out (core/httpjson.py, the LLM reviewer) into the
metrics ``serve`` installs: durations in seconds-scale buckets, errors by cause, the
tokens an answer's ``usage`` reports; real requests to the loopback OpenAI stand-in."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payload" / "gateway"))
from auto_review_gateway.core import httpjson, metrics
from auto_review_gateway.core.httperror import HttpError
from auto_review_gateway.review.llm import reviewer as llm
from test_llm import answer, api, item, make_context, sleeps  # noqa: F401 (fixtures)

from tests.fake_openai import FakeOpenAI, Reply, Stall, error_body, rate_limited


@pytest.fixture
def installed() -> Iterator[metrics.Metrics]:
    sink = metrics.Metrics()
    metrics.install(sink)
    yield sink
    metrics.install(None)


def sample(text: str, series: str) -> float:
    """The value of ``series`` (name and labels as rendered) in exposition ``text``."""
    [value] = [
        line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(series + " ")
    ]
    return float(value)


def test_an_llm_review_records_requests_errors_and_tokens(
    api: FakeOpenAI,  # noqa: F811
    installed: metrics.Metrics,
) -> None:
    # a 500 (retried), an answer that is not JSON (repaired), then a valid answer
    api.script(Reply(500, error_body("overloaded")), "not json", answer(item()))
    findings, _model = llm.review(make_context())
    assert len(findings) == 1
    text = installed.render()
    assert sample(text, "auto_review_llm_request_duration_seconds_count") == 3
    assert 'auto_review_llm_request_duration_seconds_bucket{le="600"}' in text
    assert 'auto_review_llm_request_duration_seconds_bucket{le="0.5"}' in text
    assert installed.value("llm_errors_total", {"cause": "server_error"}) == 1
    assert installed.value("llm_errors_total", {"cause": "invalid_answer"}) == 1
    assert installed.value("llm_errors_total", {"cause": "client_error"}) == 0
    # the stand-in reports 100 prompt tokens per answer, as OpenAI's usage object does
    assert installed.value("llm_tokens_total", {"kind": "prompt"}) == 200
    assert installed.value("llm_tokens_total", {"kind": "completion"}) > 0


def test_a_hostile_usage_object_is_not_counted(
    api: FakeOpenAI,  # noqa: F811
    installed: metrics.Metrics,
) -> None:
    for usage in ({"prompt_tokens": -5, "completion_tokens": True}, "lots", [1]):
        llm._count_usage({"usage": usage})
    llm._count_usage({"usage": {"prompt_tokens": 10**12, "completion_tokens": "7"}})
    assert installed.value("llm_tokens_total", {"kind": "prompt"}) == 0
    assert installed.value("llm_tokens_total", {"kind": "completion"}) == 0


def cause_of(url: str, timeout: float = 5) -> str:
    with pytest.raises(HttpError) as caught:
        httpjson.request("POST", url, target="forge", body={}, timeout=timeout)
    return httpjson.error_cause(caught.value)


def test_failures_are_counted_by_cause(installed: metrics.Metrics) -> None:
    with FakeOpenAI() as server:
        # the stand-in answers its script to a body with a model and messages
        url = f"{server.url}/chat/completions"

        def failing(reply: object, timeout: float = 5) -> str:
            server.script(reply)
            with pytest.raises(HttpError) as caught:
                httpjson.request("POST", url, target="forge", body={"model": "m", "messages": []},
                                 timeout=timeout)  # fmt: skip
            return httpjson.error_cause(caught.value)

        assert failing(rate_limited("1")) == "rate_limited"
        assert failing(Reply(400, error_body("bad", "invalid_request_error"))) == "client_error"
        assert failing(Reply(503, error_body("down"))) == "server_error"
        assert failing(Stall(5), timeout=0.3) == "timeout"
        assert cause_of(f"{server.base_url}/nowhere") == "client_error"  # its 404
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert cause_of(f"http://127.0.0.1:{closed}/api") == "connection"
    counted = {c: installed.value("forge_errors_total", {"cause": c}) for c in metrics.HTTP_CAUSES}
    assert counted == {"timeout": 1, "connection": 1, "rate_limited": 1, "client_error": 2,
                       "server_error": 1, "bad_answer": 0, "other": 0}  # fmt: skip
    assert sample(installed.render(), "auto_review_forge_request_duration_seconds_count") == 6
    assert 'auto_review_forge_request_duration_seconds_bucket{le="0.05"}' in installed.render()


def test_nothing_is_recorded_when_no_metrics_are_installed() -> None:
    metrics.install(None)
    with FakeOpenAI() as server, pytest.raises(HttpError):
        httpjson.request("GET", f"{server.base_url}/nowhere", target="llm")
    assert metrics.installed() is None


def test_known_causes_are_exported_at_zero_before_the_first_event() -> None:
    text = metrics.Metrics().render()
    assert 'auto_review_reviews_failed_total{cause="reviewer"} 0' in text
    assert 'auto_review_llm_errors_total{cause="cut_off"} 0' in text
    assert 'auto_review_forge_errors_total{cause="timeout"} 0' in text
    assert 'auto_review_llm_tokens_total{kind="prompt"} 0' in text


def test_every_call_out_of_the_forges_and_the_reviewer_names_its_target() -> None:
    """A new forge or LLM call without ``target=`` would go unmeasured: the alerts on
    forge and LLM errors would not see it."""
    import ast

    package = Path(__file__).resolve().parent.parent / "payload/gateway/auto_review_gateway"
    calls = []
    for path in [*(package / "forges").rglob("*.py"), *(package / "review").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "request"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "httpjson"
            ):
                target = [k.value for k in node.keywords if k.arg == "target"]
                calls.append(
                    (path.name, node.lineno, ast.literal_eval(target[0]) if target else None)
                )
    assert len(calls) >= 5
    assert [c for c in calls if c[2] not in ("forge", "llm")] == []
    assert {c[2] for c in calls if c[0] == "reviewer.py"} == {"llm"}
