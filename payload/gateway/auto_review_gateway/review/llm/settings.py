"""The LLM reviewer's settings (:class:`LLMConfig`), read from the environment by
:func:`load_config`: ``LLM_BASE_URL``, ``LLM_API_KEY``, ``LLM_REASONING_MODEL``,
``LLM_TIMEOUT``, ``LLM_DEADLINE``, ``LLM_TEMPERATURE``, ``LLM_MAX_TOKENS``,
``AR_SEVERITY_FLOOR``, and for large PRs and the second opinion ``AR_LLM_CONTEXT_TOKENS``,
``AR_LLM_MAX_CALLS``, ``AR_REVIEW_CONCURRENCY``, ``LLM_VERIFIER_MODEL`` and ``AR_VERIFIER``.
A bad value is ReviewError(EXIT_CONFIG) naming the variable, never repeating its value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.model import EXIT_CONFIG, SEVERITIES, ReviewError

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 120.0
DEFAULT_DEADLINE = 600.0  # seconds for the whole review: every request and retry
DEFAULT_MAX_TOKENS = 16384  # reasoning tokens count too
# Model families that accept only the default temperature (OpenAI's reasoning models).
_REASONING = re.compile(r"(?:\A|/)(?:o[1-9][0-9]*|gpt-5)(?:\Z|[-._:])", re.IGNORECASE)
DEFAULT_FLOOR = "low"
DEFAULT_CONTEXT_TOKENS = 128_000  # the window of today's common models (gpt-4o, ...)
DEFAULT_MAX_CALLS = 16  # groups sent per review: 16 x ~300 KB covers the 4 MiB diff cap
DEFAULT_CONCURRENCY = 2  # the serve default of AR_REVIEW_CONCURRENCY

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class LLMConfig:
    """The reviewer's settings, read from the environment by :func:`load_config`."""

    endpoint: str  # the full .../v1/chat/completions URL
    api_key: str | None
    model: str
    timeout: float
    floor: str
    temperature: float | None = 0.0  # None: not sent (the server's default)
    max_tokens: int = DEFAULT_MAX_TOKENS
    deadline: float = DEFAULT_DEADLINE
    context_tokens: int = DEFAULT_CONTEXT_TOKENS  # the model's window: prompt + answer
    max_calls: int = DEFAULT_MAX_CALLS  # review calls (groups of files) per review
    concurrency: int = DEFAULT_CONCURRENCY  # model calls at once, in this process
    verifier_model: str | None = None  # None: no verifier pass (AR_VERIFIER=off)

    def __repr__(self) -> str:
        # The key is never shown, even when the config object is printed or logged.
        key = "***" if self.api_key else None
        return (
            f"LLMConfig(endpoint={self.endpoint!r}, api_key={key!r}, model={self.model!r}, "
            f"timeout={self.timeout!r}, floor={self.floor!r}, "
            f"temperature={self.temperature!r}, max_tokens={self.max_tokens!r}, "
            f"deadline={self.deadline!r}, context_tokens={self.context_tokens!r}, "
            f"max_calls={self.max_calls!r}, concurrency={self.concurrency!r}, "
            f"verifier_model={self.verifier_model!r})"
        )


def is_reasoning_model(model: str) -> bool:
    """True for a model that accepts only the default temperature (o1, o3, gpt-5 ...)."""
    return bool(_REASONING.search(model.strip()))


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ReviewError(f"{name} must be a number of seconds in (0, 3600]", EXIT_CONFIG)
    return value


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name, "").strip()
    value = default if not text else int(text) if text.isdigit() else -1
    if not low <= value <= high:
        raise ReviewError(f"{name} must be a whole number from {low} to {high}", EXIT_CONFIG)
    return value


def _model_name(env: Mapping[str, str], name: str, default: str) -> str:
    model = env.get(name, "").strip() or default
    if _CONTROL.search(model):
        raise ReviewError(f"{name} contains control characters", EXIT_CONFIG)
    return model


def chat_completions_url(base_url: str) -> str:
    """``<base>/v1/chat/completions``: ``/v1`` is appended unless ``base_url`` ends in it."""
    base = base_url.strip().rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def severity_floor(env: Mapping[str, str] | None = None) -> str:
    """``AR_SEVERITY_FLOOR`` (default "low"); ReviewError(EXIT_CONFIG) if not a severity."""
    env = os.environ if env is None else env
    floor = env.get("AR_SEVERITY_FLOOR", "").strip().lower() or DEFAULT_FLOOR
    if floor not in SEVERITIES:
        raise ReviewError(f"AR_SEVERITY_FLOOR must be one of {', '.join(SEVERITIES)}", EXIT_CONFIG)
    return floor


def load_config(env: Mapping[str, str] | None = None) -> LLMConfig:
    """The LLM settings from ``env`` (default: the process environment).

    Raises ReviewError(EXIT_CONFIG) naming the variable when one is missing or malformed;
    values are never repeated in messages.
    """
    env = os.environ if env is None else env
    base = env.get("LLM_BASE_URL", "").strip()
    if not base:
        raise ReviewError("LLM_BASE_URL is not set", EXIT_CONFIG)
    httpjson.check_url(base, what="LLM_BASE_URL", exit_code=EXIT_CONFIG)
    timeout = _seconds(env, "LLM_TIMEOUT", DEFAULT_TIMEOUT)
    deadline = _seconds(env, "LLM_DEADLINE", DEFAULT_DEADLINE)
    api_key = env.get("LLM_API_KEY", "").strip() or None
    if api_key is not None and not httpjson.header_safe(api_key):
        raise ReviewError("LLM_API_KEY contains characters not allowed in a header", EXIT_CONFIG)
    model = _model_name(env, "LLM_REASONING_MODEL", DEFAULT_MODEL)
    raw = env.get("LLM_TEMPERATURE", "").strip().lower()
    temperature: float | None
    if not raw:
        temperature = None if is_reasoning_model(model) else 0.0
    elif raw == "default":
        temperature = None
    else:
        try:
            temperature = float(raw)
        except ValueError:
            temperature = -1.0
        if not 0 <= temperature <= 2:
            raise ReviewError(
                "LLM_TEMPERATURE must be a number from 0 to 2, or 'default'", EXIT_CONFIG
            )
    raw = env.get("LLM_MAX_TOKENS", "").strip()
    max_tokens = int(raw) if raw.isdigit() else (DEFAULT_MAX_TOKENS if not raw else 0)
    if not 1 <= max_tokens <= 1_000_000:
        raise ReviewError("LLM_MAX_TOKENS must be a whole number from 1 to 1000000", EXIT_CONFIG)
    context_tokens = _whole(env, "AR_LLM_CONTEXT_TOKENS", DEFAULT_CONTEXT_TOKENS, 4096, 10**7)
    verifier = env.get("AR_VERIFIER", "").strip().lower() or "on"
    if verifier not in ("on", "off"):
        raise ReviewError("AR_VERIFIER must be on or off", EXIT_CONFIG)
    return LLMConfig(
        endpoint=chat_completions_url(base),
        api_key=api_key,
        model=model,
        timeout=timeout,
        floor=severity_floor(env),
        temperature=temperature,
        max_tokens=max_tokens,
        deadline=deadline,
        context_tokens=context_tokens,
        max_calls=_whole(env, "AR_LLM_MAX_CALLS", DEFAULT_MAX_CALLS, 1, 1000),
        concurrency=_whole(env, "AR_REVIEW_CONCURRENCY", DEFAULT_CONCURRENCY, 1, 64),
        verifier_model=(
            _model_name(env, "LLM_VERIFIER_MODEL", model) if verifier == "on" else None
        ),
    )
