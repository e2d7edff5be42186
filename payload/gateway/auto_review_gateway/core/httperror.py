"""What a failed HTTP exchange is (:class:`HttpError`) and when to try it again: the
transient statuses, ``Retry-After`` (:func:`parse_retry_after`) and GitHub's rate-limit
headers (:func:`rate_limit_wait`, :func:`secondary_limit`). Shared by every client the gateway
has.
"""

from __future__ import annotations

import time
from typing import Any

from auto_review_gateway.core.model import ReviewError

# Statuses worth another try, as OpenAI's own client retries them (openai-python,
# ``_base_client.py`` ``_should_retry``): 408 request timeout, 409 lock timeout, 429 rate
# limit, and every 5xx. The same holds for a forge behind a proxy (502/503/504).
TRANSIENT_STATUSES = frozenset({408, 409, 429})


def is_transient_status(status: int | None) -> bool:
    """True for 408, 409, 429 and 5xx (see TRANSIENT_STATUSES)."""
    return status is not None and (status in TRANSIENT_STATUSES or 500 <= status <= 599)


class HttpError(ReviewError):
    """An HTTP exchange that failed; ``status`` is None when no answer arrived.

    ``transient`` says whether trying again may help (a transient status, a network
    error, a timeout); ``retry_after`` is the wait the server asked for, in seconds
    (``Retry-After`` / ``retry-after-ms``), if any; ``code`` and ``param`` are the
    OpenAI error object's ``error.code`` and ``error.param`` when the body had them;
    ``detail`` is the error answer's message (Forgejo's ``message``), redacted;
    ``headers`` keeps the answer's rate-limit headers (:data:`LIMIT_HEADERS`, lower-case
    names); ``min_wait`` is the least a retry must wait when the server named no time
    (GitHub's secondary rate limit: :func:`secondary_limit`), doubled at each retry.
    """

    def __init__(
        self,
        message: str,
        exit_code: int,
        status: int | None = None,
        *,
        transient: bool | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        param: str | None = None,
        detail: str = "",
        headers: Any = None,
        min_wait: float | None = None,
    ) -> None:
        super().__init__(message, exit_code)
        self.detail = detail  # the server's own message, redacted ('' if none)
        self.status = status
        self.transient = is_transient_status(status) if transient is None else transient
        self.retry_after = retry_after
        self.code = code
        self.param = param
        self.min_wait = min_wait
        self.headers = {
            name: str(headers.get(name)).strip()
            for name in LIMIT_HEADERS
            if headers is not None and headers.get(name) is not None
        }


# The headers of an error answer that say how long to wait (kept on the HttpError).
LIMIT_HEADERS = ("retry-after", "x-ratelimit-remaining", "x-ratelimit-reset")

MAX_RETRY_AFTER = 300.0  # seconds; a server asking for longer is not waited for


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """The wait a response asks for, in seconds, or None.

    ``retry-after-ms`` (milliseconds; sent by OpenAI's API, honoured by its clients) wins
    over ``Retry-After``, which RFC 9110 section 10.2.3 defines as either
    delay-seconds or an HTTP-date. A date in the past is 0; garbage is None.
    """
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000
            if value >= 0 and value == value:
                return value
        except ValueError:
            pass
    text = (headers.get("Retry-After") or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        import email.utils

        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def rate_limit_wait(status: int, headers: Any, now: float | None = None) -> float | None:
    """Seconds until GitHub's primary rate limit resets, for a 403 or 429 whose
    ``x-ratelimit-remaining`` is 0 (GitHub's "Rate limits for the REST API": wait until
    ``x-ratelimit-reset``, epoch seconds); None for any other answer."""
    if headers is None or status not in (403, 429):
        return None
    if (headers.get("x-ratelimit-remaining") or "").strip() != "0":
        return None
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    if not reset.isdigit():
        return None
    now = time.time() if now is None else now
    return max(0.0, int(reset) - now)


# GitHub's "Rate limits for the REST API" (docs.github.com/rest/using-the-rest-api/
# rate-limits-for-the-rest-api, "Exceeding the rate limit"): a secondary limit answers 403
# or 429 "and an error message that indicates that you exceeded a secondary rate limit";
# with ``retry-after``, wait that long; with ``x-ratelimit-remaining: 0``, until
# ``x-ratelimit-reset``; "Otherwise, wait for at least one minute before retrying", and
# longer (exponentially) if it keeps failing.
SECONDARY_WAIT = 60.0


def secondary_limit(status: int | None, headers: Any, message: str) -> bool:
    """Whether a GitHub answer is a secondary rate limit that names no time to wait: a 429,
    or a 403 whose message says "rate limit", without ``retry-after`` and with
    ``x-ratelimit-remaining`` not 0 (those two cases name their time: see
    :func:`parse_retry_after`, :func:`rate_limit_wait`). A 403 with another message is
    a permission GitHub refuses, the same on every try: GitHub sends the rate-limit
    headers on every answer, so their values alone cannot tell the two apart."""
    if status not in (403, 429):
        return False
    headers = headers or {}
    if (headers.get("retry-after") or "").strip():
        return False
    if (headers.get("x-ratelimit-remaining") or "").strip() == "0":
        return False
    return status == 429 or "rate limit" in message.lower()
