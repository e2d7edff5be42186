"""What ``preflight`` asks the model server: does it answer ``GET /v1/models`` (OpenAI
API reference, "List models": ``{"object": "list", "data": [{"id": ...}]}``), does it
list the configured model, and does one tiny chat completion come back as the strict
schema's JSON (the same request a review sends: :func:`exchange.build_request`, with
``response_format`` ``json_schema`` ``strict: true``), checked by the same validator.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.checks import FAIL, PASS, SKIP, Check, from_error
from auto_review_gateway.core.model import EXIT_REVIEWER, ReviewError
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.review.llm.answer import InvalidAnswer, validate_answer
from auto_review_gateway.review.llm.exchange import complete
from auto_review_gateway.review.llm.prompt import SYSTEM_PROMPT
from auto_review_gateway.review.llm.settings import LLMConfig, load_config

PROBE_TIMEOUT = 60.0  # seconds for the one completion (a cold model may load first)
PROBE_MESSAGE = (
    "auto-review preflight: a connection check. There is no diff to review: answer with"
    " the JSON object, no findings, and the summary 'ok'."
)
KEY_FIX = "check LLM_API_KEY (sent as Authorization: Bearer) and LLM_BASE_URL"


def checks(env: Mapping[str, str]) -> list[Check]:
    """The model server, the configured model, one completion: a :class:`Check` each
    (one SKIP when no ``LLM_BASE_URL`` is set: reviews then use the built-in rules)."""
    if not env.get("LLM_BASE_URL", "").strip():
        detail = "LLM_BASE_URL is not set: reviews use the built-in rules only"
        return [Check("model server", SKIP, detail, "set LLM_BASE_URL for LLM reviews")]
    try:
        config = load_config(env)
    except ReviewError as exc:
        return [from_error("model server", exc, "fix the LLM_* setting named")]
    base = config.endpoint[: -len("/chat/completions")]
    try:
        doc = httpjson.request(
            "GET",
            f"{base}/models",
            target="llm",
            token=config.api_key,
            timeout=min(config.timeout, PROBE_TIMEOUT),
            exit_code=EXIT_REVIEWER,
        )[1]
    except httpjson.HttpError as exc:
        fix = KEY_FIX if exc.status in (401, 403) else "check LLM_BASE_URL and the server"
        return [from_error("model server", exc, fix)]
    data = doc.get("data") if isinstance(doc, dict) else None
    served = sorted(
        {m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)}
    )
    out = [Check("model server", PASS, f"{base}/models lists {len(served)} model(s)")]
    if config.model not in served:
        shown = httpjson.clean_text(", ".join(served) or "none", 200)
        detail = f"LLM_REASONING_MODEL {config.model!r} is not served (the server lists: {shown})"
        fix = "set LLM_REASONING_MODEL to a model the server lists, or load it on the server"
        return [*out, Check("model", FAIL, detail, fix)]
    out.append(Check("model", PASS, f"{config.model!r} is served"))
    return [*out, completion_check(config)]


def completion_check(config: LLMConfig) -> Check:
    """One completion under the strict schema, validated as a review's answer is."""
    retry = Retry(1, deadline=time.monotonic() + min(config.deadline, PROBE_TIMEOUT))
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": PROBE_MESSAGE},
    ]
    try:
        findings, _summary, _walk = validate_answer(complete(config, messages, retry))
    except InvalidAnswer as exc:
        detail = (
            f"the answer does not follow the review schema: {httpjson.clean_text(str(exc), 200)}"
        )
        fix = "use a model (and server) that supports response_format json_schema, strict"
        return Check("completion", FAIL, detail, fix)
    except ReviewError as exc:
        return from_error("completion", exc, "check the server's log for the refused request")
    return Check(
        "completion",
        PASS,
        f"{config.model!r} answered the strict schema ({len(findings)} findings)",
    )
