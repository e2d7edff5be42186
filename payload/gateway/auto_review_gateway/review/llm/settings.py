"""The LLM reviewer's settings (:class:`LLMConfig`), read from the environment by
:func:`load_config`: ``LLM_BASE_URL``, ``LLM_API_KEY``, ``LLM_REASONING_MODEL``,
``LLM_TIMEOUT``, ``LLM_DEADLINE``, ``LLM_TEMPERATURE``, ``LLM_MAX_TOKENS`` and
``AR_SEVERITY_FLOOR``. A bad value is ReviewError(EXIT_CONFIG) naming the variable,
never repeating its value.
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

    def __repr__(self) -> str:
        # The key is never shown, even when the config object is printed or logged.
        key = "***" if self.api_key else None
        return (
            f"LLMConfig(endpoint={self.endpoint!r}, api_key={key!r}, model={self.model!r}, "
            f"timeout={self.timeout!r}, floor={self.floor!r}, "
            f"temperature={self.temperature!r}, max_tokens={self.max_tokens!r}, "
            f"deadline={self.deadline!r})"
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
    model = env.get("LLM_REASONING_MODEL", "").strip() or DEFAULT_MODEL
    if _CONTROL.search(model):
        raise ReviewError("LLM_REASONING_MODEL contains control characters", EXIT_CONFIG)
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
    return LLMConfig(
        endpoint=chat_completions_url(base),
        api_key=api_key,
        model=model,
        timeout=timeout,
        floor=severity_floor(env),
        temperature=temperature,
        max_tokens=max_tokens,
        deadline=deadline,
    )
