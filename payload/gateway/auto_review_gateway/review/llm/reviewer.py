"""The LLM reviewer: one OpenAI-compatible ``/v1/chat/completions`` call, strict JSON out.

The prompt is built in :mod:`prompt`, the answer checked in :mod:`answer`;
this module holds the settings and the exchange with the server. Trust boundaries:

* The system message is a constant (:data:`SYSTEM_PROMPT`): our instructions and the
  answer's JSON schema. Nothing from the repository is ever put into it.
* The repository's guidelines and the diff go into the user message, between markers
  that carry a digest of the data itself (so the data cannot contain its own end
  marker), labelled as untrusted data that cannot change instructions, schema or verdict.
* The answer is validated against the schema (:mod:`answer`), whatever the server claims to
  enforce: unknown or missing keys, wrong types, unknown severities make it invalid
  (one repair round, then :data:`~auto_review_gateway.core.model.EXIT_REVIEWER`). Findings
  outside the changed lines, or below ``AR_SEVERITY_FLOOR``, are dropped.
* Only findings leave this module. The model's summary is validated and discarded: the
  verdict and summary of a Review are computed from severities, and where the review is
  posted is decided by the caller's configuration, never by model text.

Servers as they behave (OpenAI API reference, "Create chat completion"):

* ``max_completion_tokens`` bounds the answer, reasoning tokens included (``max_tokens``
  is deprecated and refused by reasoning models); a server that refuses the parameter
  (400 with ``param: max_completion_tokens``) is asked again with ``max_tokens``.
* Reasoning models (o1, o3, o4-mini, gpt-5 ...) support only the default temperature and
  answer 400 ``unsupported_value`` (``param: temperature``) to ``temperature: 0``: no
  temperature is sent for them (``LLM_TEMPERATURE``: a number, ``default`` for none, or
  empty for that automatic choice), and any model that refuses it is asked again
  without it.
* ``choices[0].finish_reason`` ``length`` (cut off at the token limit) or
  ``content_filter`` is an error, not an answer to repair.
* 408, 409, 429 and 5xx and network errors are retried with jittered backoff that
  honours ``Retry-After`` (:class:`retry.Retry`), within a total deadline per review
  (``LLM_DEADLINE``) that also bounds every request's timeout.

Environment: ``LLM_BASE_URL`` (required; ``https://host`` or ``https://host/v1``),
``LLM_API_KEY`` (optional, sent as a Bearer token), ``LLM_REASONING_MODEL``,
``LLM_TIMEOUT`` (seconds per request), ``LLM_DEADLINE`` (seconds per review, default
600), ``LLM_TEMPERATURE``, ``LLM_MAX_TOKENS`` (default 16384), ``AR_SEVERITY_FLOOR``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core import httpjson, metrics
from auto_review_gateway.core.model import (
    EXIT_REVIEWER,
    Finding,
    ReviewContext,
    ReviewError,
)
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.review.llm.answer import (
    MAX_FINDINGS,
    MAX_RULE_CHARS,
    InvalidAnswer,
    to_findings,
    validate_answer,
)
from auto_review_gateway.review.llm.prompt import (
    ANSWER_SCHEMA,
    MAX_MESSAGE_CHARS,
    REPAIR_PROMPT,
    SYSTEM_PROMPT,
    build_user_message,
    render_diff,
)
from auto_review_gateway.review.llm.settings import LLMConfig, load_config

RETRY_ATTEMPTS = 4
_MAX_ECHO_CHARS = 20_000  # of an invalid answer, sent back in the repair round


def build_request(
    config: LLMConfig,
    messages: list[dict[str, str]],
    *,
    temperature: bool = True,
    token_field: str = "max_completion_tokens",
) -> dict[str, Any]:
    """The chat-completions request body for ``messages``; ``temperature`` False leaves
    it out whatever the config says, ``token_field`` names the answer's token bound."""
    body: dict[str, Any] = {"model": config.model, "messages": messages}
    if temperature and config.temperature is not None:
        body["temperature"] = config.temperature
    body[token_field] = config.max_tokens
    # Servers that honour it constrain decoding to the schema; the schema is also in
    # the system prompt for servers that ignore response_format.
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "code_review", "strict": True, "schema": ANSWER_SCHEMA},
    }
    return body


def _content(response: Any) -> str:
    """``choices[0].message.content``; InvalidAnswer if the model gave no text.

    A response without choices at all is a protocol error (ReviewError), not something a
    repair round can fix.
    """
    try:
        choice = response["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        _count_error("bad_answer")
        raise ReviewError(
            "LLM server answered without choices[0].message (not a chat completion)",
            EXIT_REVIEWER,
        ) from None
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    if finish == "length":
        _count_error("cut_off")
        raise ReviewError(
            "the LLM answer was cut off at the token limit (finish_reason length):"
            " raise LLM_MAX_TOKENS or use a model with a larger output",
            EXIT_REVIEWER,
        )
    if finish == "content_filter":
        _count_error("content_filter")
        raise ReviewError(
            "the LLM server withheld the answer (finish_reason content_filter)", EXIT_REVIEWER
        )
    content = message.get("content")
    if isinstance(content, str) and content.strip():
        return content
    if isinstance(message.get("refusal"), str):
        raise InvalidAnswer("the model refused instead of answering with the JSON object")
    raise InvalidAnswer("the answer is empty")


def _count_error(cause: str) -> None:
    """Count a failed answer in ``llm_errors_total`` (HTTP failures are counted by
    :func:`httpjson.request`)."""
    sink = metrics.installed()
    if sink is not None:
        sink.inc("llm_errors_total", {"cause": cause})


def _count_usage(response: Any) -> None:
    """Count the tokens an answer's ``usage`` reports; anything but a plausible
    non-negative integer (a hostile or broken server) is ignored."""
    sink = metrics.installed()
    usage = response.get("usage") if isinstance(response, dict) else None
    if sink is None or not isinstance(usage, dict):
        return
    for kind in ("prompt", "completion"):
        n = usage.get(f"{kind}_tokens")
        if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**9:
            sink.inc("llm_tokens_total", {"kind": kind}, n)


# --------------------------------------------------------------------------- the call


def make_retry(deadline: float) -> Retry:
    """The retry policy of one review's requests (tests replace it to never really sleep)."""
    return Retry(RETRY_ATTEMPTS, deadline=deadline)


class _Session:
    """The requests of one review: what the server turned out to refuse, and the deadline."""

    def __init__(self, config: LLMConfig, retry: Retry) -> None:
        self.config = config
        self.retry = retry
        self.temperature = config.temperature is not None
        self.token_field = "max_completion_tokens"

    def _send(self, messages: list[dict[str, str]]) -> Any:
        left = self.retry.remaining()
        if left is not None and left <= 0:
            raise ReviewError(
                f"the LLM review ran out of time (LLM_DEADLINE {self.config.deadline:g} s)",
                EXIT_REVIEWER,
            )
        timeout = self.config.timeout if left is None else min(self.config.timeout, left)
        body = build_request(
            self.config, messages, temperature=self.temperature, token_field=self.token_field
        )
        return httpjson.request(
            "POST",
            self.config.endpoint,
            target="llm",
            token=self.config.api_key,
            auth_scheme="Bearer",
            body=body,
            timeout=max(timeout, 0.001),
            exit_code=EXIT_REVIEWER,
        )[1]

    def _adapted(self, exc: httpjson.HttpError) -> bool:
        """Drop what a 400 says the model refuses; True if there is something to resend."""
        if exc.status != 400 or exc.code not in ("unsupported_value", "unsupported_parameter"):
            return False
        if exc.param == "temperature" and self.temperature:
            self.temperature = False
            return True
        if exc.param == "max_completion_tokens" and self.token_field != "max_tokens":
            self.token_field = "max_tokens"
            return True
        return False

    def complete(self, messages: list[dict[str, str]]) -> str:
        """One chat completion (retried, adapted); the assistant's text."""

        def once() -> Any:
            for _ in range(3):  # at most temperature and the token bound to give up
                try:
                    return self._send(messages)
                except httpjson.HttpError as exc:
                    if not self._adapted(exc):
                        raise
            return self._send(messages)

        response = self.retry.call(once)
        _count_usage(response)
        return _content(response)


def complete(config: LLMConfig, messages: list[dict[str, str]], retry: Retry) -> str:
    """One chat completion as a review sends it (strict schema, adapted to what the
    server refuses, retried by ``retry``); the assistant's text."""
    return _Session(config, retry).complete(messages)


def _complete(config: LLMConfig, messages: list[dict[str, str]]) -> str:
    """One chat-completions round trip; the assistant's text (InvalidAnswer if none)."""
    return _Session(config, make_retry(time.monotonic() + config.deadline)).complete(messages)


def review(
    context: ReviewContext,
    *,
    config: LLMConfig | None = None,
    retry: Callable[[float], Retry] | None = None,
) -> tuple[list[Finding], str]:
    """Review ``context`` with the configured model: ``(findings, model name)``.

    At most two requests: the review, and if its answer is invalid one repair round that
    shows the model its answer and the validation error. Raises ReviewError with
    EXIT_REVIEWER when the server fails (HTTP error, timeout) or the answer is still
    invalid, and EXIT_CONFIG for bad settings. ``config`` defaults to :func:`load_config`.
    """
    config = load_config() if config is None else config
    session = _Session(config, (retry or make_retry)(time.monotonic() + config.deadline))
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": build_user_message(context)},
    ]
    answer = ""
    try:
        answer = session.complete(messages)
        items, _summary = validate_answer(answer)
    except InvalidAnswer as first:
        _count_error("invalid_answer")
        messages += [
            {"role": "assistant", "content": answer[:_MAX_ECHO_CHARS] or "(empty answer)"},
            {"role": "user", "content": REPAIR_PROMPT.format(error=first)},
        ]
        try:
            items, _summary = validate_answer(session.complete(messages))
        except InvalidAnswer as second:
            _count_error("invalid_answer")
            reason = httpjson.clean_text(str(second), 300)
            raise ReviewError(
                f"LLM answer invalid after one repair attempt: {reason}", EXIT_REVIEWER
            ) from None
    # The summary is deliberately dropped: the verdict and summary of a Review are
    # computed from the findings' severities, never taken from model text.
    return to_findings(items, context, config.floor), config.model


__all__ = [
    "ANSWER_SCHEMA",
    "MAX_FINDINGS",
    "MAX_MESSAGE_CHARS",
    "MAX_RULE_CHARS",
    "SYSTEM_PROMPT",
    "InvalidAnswer",
    "LLMConfig",
    "build_user_message",
    "load_config",
    "render_diff",
    "review",
    "to_findings",
    "validate_answer",
]
