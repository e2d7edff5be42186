"""The exchange with an OpenAI-compatible ``/v1/chat/completions`` server: the request
body, one completion (retried, adapted to what the server refuses), its text.

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

At most ``AR_REVIEW_CONCURRENCY`` requests are in flight in the process at once, whatever
the number of reviews and groups: each request holds a slot of one semaphore.
"""

from __future__ import annotations

import threading
from typing import Any

from auto_review_gateway.core import httpjson, metrics
from auto_review_gateway.core.model import (
    EXIT_REVIEWER,
    ReviewError,
)
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.review.llm.answer import InvalidAnswer
from auto_review_gateway.review.llm.prompt import ANSWER_SCHEMA
from auto_review_gateway.review.llm.settings import LLMConfig

_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def _slot(concurrency: int) -> threading.BoundedSemaphore:
    """The process's semaphore of ``concurrency`` request slots."""
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(concurrency, threading.BoundedSemaphore(concurrency))


def build_request(
    config: LLMConfig,
    messages: list[dict[str, str]],
    *,
    temperature: bool = True,
    token_field: str = "max_completion_tokens",
    schema: tuple[str, dict[str, Any]] = ("code_review", ANSWER_SCHEMA),
) -> dict[str, Any]:
    """The chat-completions request body for ``messages``; ``temperature`` False leaves
    it out whatever the config says, ``token_field`` names the answer's token bound,
    ``schema`` is the answer's (name, JSON schema)."""
    body: dict[str, Any] = {"model": config.model, "messages": messages}
    if temperature and config.temperature is not None:
        body["temperature"] = config.temperature
    body[token_field] = config.max_tokens
    # Servers that honour it constrain decoding to the schema; the schema is also in
    # the system prompt for servers that ignore response_format.
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": schema[0], "strict": True, "schema": schema[1]},
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
        count_error("bad_answer")
        raise ReviewError(
            "LLM server answered without choices[0].message (not a chat completion)",
            EXIT_REVIEWER,
        ) from None
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    if finish == "length":
        count_error("cut_off")
        raise ReviewError(
            "the LLM answer was cut off at the token limit (finish_reason length):"
            " raise LLM_MAX_TOKENS or use a model with a larger output",
            EXIT_REVIEWER,
        )
    if finish == "content_filter":
        count_error("content_filter")
        raise ReviewError(
            "the LLM server withheld the answer (finish_reason content_filter)", EXIT_REVIEWER
        )
    content = message.get("content")
    if isinstance(content, str) and content.strip():
        return content
    if isinstance(message.get("refusal"), str):
        raise InvalidAnswer("the model refused instead of answering with the JSON object")
    raise InvalidAnswer("the answer is empty")


def count_error(cause: str) -> None:
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


class OutOfTime(ReviewError):
    """The review's deadline came before the request could be sent."""


class Session:
    """The requests of one review to one model: what the server turned out to refuse,
    the deadline, and the calls and tokens spent (:attr:`usage`). Thread-safe."""

    def __init__(
        self,
        config: LLMConfig,
        retry: Retry,
        schema: tuple[str, dict[str, Any]] = ("code_review", ANSWER_SCHEMA),
    ) -> None:
        self.config = config
        self.retry = retry
        self.schema = schema
        self.temperature = config.temperature is not None
        self.token_field = "max_completion_tokens"
        self.usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._lock = threading.Lock()

    def _send(self, messages: list[dict[str, str]]) -> Any:
        left = self.retry.remaining()
        if left is not None and left <= 0:
            raise OutOfTime(
                f"the LLM review ran out of time (LLM_DEADLINE {self.config.deadline:g} s)",
                EXIT_REVIEWER,
            )
        timeout = self.config.timeout if left is None else min(self.config.timeout, left)
        body = build_request(
            self.config,
            messages,
            temperature=self.temperature,
            token_field=self.token_field,
            schema=self.schema,
        )
        with _slot(self.config.concurrency):
            answer = httpjson.request(
                "POST",
                self.config.endpoint,
                target="llm",
                token=self.config.api_key,
                auth_scheme="Bearer",
                body=body,
                timeout=max(timeout, 0.001),
                exit_code=EXIT_REVIEWER,
            )[1]
        self._count(answer)
        return answer

    def _count(self, answer: Any) -> None:
        usage = answer.get("usage") if isinstance(answer, dict) else None
        with self._lock:
            self.usage["calls"] += 1
            for key in ("prompt_tokens", "completion_tokens"):
                value = usage.get(key) if isinstance(usage, dict) else None
                if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9:
                    self.usage[key] += value

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
    return Session(config, retry).complete(messages)
