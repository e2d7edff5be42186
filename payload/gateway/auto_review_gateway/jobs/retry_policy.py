"""The jobs' retry policy: which failures may pass (:func:`retryable`), how long to wait
before the next try (:func:`backoff`, and no less than the server asked:
:func:`server_wait`), and how a failure is named and recorded
(:func:`failure_cause`, :func:`error_text`).
"""

from __future__ import annotations

import random

from auto_review_gateway.jobs.base import MAX_ERROR_CHARS

RETRY_BASE = 30.0  # seconds before the first retry
RETRY_CAP = 1800.0


def backoff(attempt: int) -> float:
    """Seconds before retrying a job whose try number ``attempt`` failed: 30 s, 2 min,
    8 min ... capped at 30 min, times a random factor in [0.75, 1]."""
    return min(RETRY_CAP, RETRY_BASE * 4 ** (attempt - 1)) * (1 - 0.25 * random.random())


def server_wait(exc: BaseException) -> float:
    """The least wait before a job that raised ``exc`` runs again: what a rate-limited
    answer asked for (``retry-after``, a primary limit's reset, or a secondary limit's
    minute, see :mod:`core.httperror`), 0 for any other failure. A job whose review
    deadline ran out inside such a wait goes back to the queue for at least that long."""
    waits = (getattr(exc, "retry_after", None), getattr(exc, "min_wait", None))
    return max([0.0, *(float(w) for w in waits if isinstance(w, (int, float)))])


def retryable(exc: BaseException) -> bool:
    """Whether a job that raised ``exc`` may succeed later: could not fetch (EXIT_CLONE),
    the reviewer failed (EXIT_REVIEWER), posting failed (EXIT_POST), unless the error
    says it is not transient (an HTTP 4xx). A bad ref, a bad configuration or a bug
    would fail the same way again."""
    from auto_review_gateway.core import model

    if getattr(exc, "transient", True) is False:
        return False  # an HTTP answer that will not change: 401, 404, 422 ...
    code = getattr(exc, "exit_code", None)
    return isinstance(exc, model.ReviewError) and code in (
        model.EXIT_CLONE,
        model.EXIT_REVIEWER,
        model.EXIT_POST,
    )


def failure_cause(exc: BaseException) -> str:
    """The ``cause`` label of a failed review: the ReviewError's exit code name
    (``clone``, ``bad_ref``, ``reviewer``, ``config``, ``post``, ``usage``) or the
    exception's class name."""
    from auto_review_gateway.core import model

    code = getattr(exc, "exit_code", None)
    if isinstance(exc, model.ReviewError) and isinstance(code, int):
        for name, value in vars(model).items():
            if name.startswith("EXIT_") and value == code:
                return name[len("EXIT_") :].lower()
        return f"exit_{code}"
    return type(exc).__name__


def error_text(exc: BaseException) -> str:
    """What the queue records of a failure: its cause and message on one line, a URL's
    credentials redacted, at most MAX_ERROR_CHARS."""
    from auto_review_gateway.review.gitrepo import redact

    message = " ".join(str(exc).split())
    text = f"{failure_cause(exc)}: {message}" if message else failure_cause(exc)
    return redact(text)[:MAX_ERROR_CHARS]
