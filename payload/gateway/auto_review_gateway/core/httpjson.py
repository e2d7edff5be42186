"""A small JSON-over-HTTPS client on urllib, shared by the LLM and Forgejo clients.

What it guarantees, because both callers send a secret with every request:

* TLS is verified against the default trust store (``SSL_CERT_FILE`` is honoured, which is
  how the sandbox points Python at its CA bundle);
* only ``http`` and ``https`` URLs, never with ``user:password@`` in them;
* redirects are refused: urllib would replay the Authorization header to whatever host a
  3xx names, and a review is never posted anywhere but the configured URL;
* the response body is bounded (``MAX_RESPONSE_BYTES``) and so is the time spent reading it;
* every failure is a :class:`~auto_review_gateway.core.httperror.HttpError` (a ReviewError)
  whose one-line message names the
  method, the URL without query or credentials, and the status, with the token redacted.

Over 300 lines: one request's whole life (URL and header checks, TLS, no redirects,
bounded read, error mapping) is the one guarantee its callers rely on.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from typing import Any

from auto_review_gateway import __version__
from auto_review_gateway.core import metrics
from auto_review_gateway.core.httperror import HttpError, parse_retry_after, rate_limit_wait
from auto_review_gateway.core.model import EXIT_REVIEWER, ReviewError

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_ERROR_BODY_BYTES = 64 * 1024  # read of an error answer, for its message only
_ERROR_DETAIL_CHARS = 200
_CHUNK = 64 * 1024
USER_AGENT = f"auto-review-gateway/{__version__}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turn every 3xx into an error instead of following it (see the module docstring)."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        return None  # urllib then raises HTTPError for the 3xx itself


_contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _tls_context() -> ssl.SSLContext:
    """A verifying TLS context for the current SSL_CERT_FILE / SSL_CERT_DIR.

    create_default_context() loads the default verify paths (which honour those two
    variables) and checks host names. Loading a CA bundle costs ~30 ms, so a context is
    kept per pair of values; SSLContext is safe to share between threads.
    """
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = ssl.create_default_context()
        return context


def _opener() -> urllib.request.OpenerDirector:
    """An opener with verified TLS, no redirects, and proxies from the environment."""
    return urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=_tls_context()), _NoRedirect()
    )


def display_url(url: str) -> str:
    """``url`` as it may appear in messages: scheme, host, port and path only."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def clean_text(text: str, limit: int) -> str:
    """``text`` on one line: control characters become spaces, runs of spaces collapse,
    and it is cut to ``limit`` characters (with an ellipsis when cut)."""
    flat = "".join(" " if (ord(c) < 32 or 127 <= ord(c) < 160) else c for c in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def header_safe(value: str) -> bool:
    """True if ``value`` can be sent in a header: printable ASCII only.

    Checked before sending, because http.client's own error for a bad header value
    quotes the value, which for Authorization is the secret.
    """
    return value.isascii() and value.isprintable()


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    # Very short "secrets" would blank out ordinary words; real tokens are long.
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text


def check_url(url: str, *, what: str, exit_code: int) -> None:
    """Raise ReviewError unless ``url`` is an http(s) URL with a host and no credentials.

    ``what`` names the setting (an environment variable) in the message; the URL itself
    is not repeated, so a mistyped secret pasted into it is not echoed either.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise ReviewError(f"{what} is not a valid URL", exit_code) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ReviewError(f"{what} must be an http:// or https:// URL with a host", exit_code)
    if parts.username is not None or parts.password is not None:
        raise ReviewError(f"{what} must not contain user:password@", exit_code)


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    """``(error.code, error.param)`` of an OpenAI error object, else ``(None, None)``."""
    try:
        doc = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None, None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, param = error.get("code"), error.get("param")
    return (code if isinstance(code, str) else None, param if isinstance(param, str) else None)


def _error_detail(raw: bytes, token: str | None) -> str:
    """A short, one-line, redacted message from an error answer's body ('' if none)."""
    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        # Forgejo/Gitea: {"message": ...}; OpenAI-compatible: {"error": {"message": ...}}
        error = doc.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        elif isinstance(error, str):
            text = error
        elif isinstance(doc.get("message"), str):
            text = doc["message"]
            # GitHub: {"message": "Unprocessable Entity", "errors": ["why", ...]}
            errors = doc.get("errors")
            if isinstance(errors, list):
                given = [e.get("message") if isinstance(e, dict) else e for e in errors]
                why = [w for w in given if isinstance(w, str)]
                if why:
                    text = f"{text}: {'; '.join(why)}"
    # Redact before cutting, so no prefix of the token survives the cut.
    return clean_text(redact(text, token), _ERROR_DETAIL_CHARS)


def _read_bounded(response: Any, limit: int, deadline: float) -> bytes:
    """The body, or ValueError when longer than ``limit``; TimeoutError past ``deadline``.

    The socket timeout bounds each read; the deadline bounds a server that trickles.
    """
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise ValueError(f"answer larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("timed out reading the answer")
        chunk = response.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"answer larger than {limit} bytes")


def request(
    method: str,
    url: str,
    *,
    target: str | None = None,
    token: str | None = None,
    auth_scheme: str = "Bearer",
    body: Any = None,
    timeout: float = 30,
    exit_code: int = EXIT_REVIEWER,
    accept_status: Collection[int] = (),
    max_bytes: int = MAX_RESPONSE_BYTES,
    headers: Mapping[str, str] | None = None,
    answer_headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """:func:`exchange`, timed: with ``target`` (``llm`` or ``forge``) the request's wall
    time goes into ``<target>_request_duration_seconds`` and a failure into
    ``<target>_errors_total{cause}`` of the installed metrics (:func:`error_cause`)."""
    started = time.monotonic()
    try:
        answer = exchange(
            method,
            url,
            token=token,
            auth_scheme=auth_scheme,
            body=body,
            timeout=timeout,
            exit_code=exit_code,
            accept_status=accept_status,
            max_bytes=max_bytes,
            headers=headers,
            answer_headers=answer_headers,
        )
    except HttpError as exc:
        _record(target, time.monotonic() - started, error_cause(exc))
        raise
    _record(target, time.monotonic() - started, None)
    return answer


def error_cause(exc: HttpError) -> str:
    """The ``cause`` label of a failed request: ``rate_limited``, ``server_error``,
    ``client_error`` (another 3xx/4xx), ``bad_answer`` (a 2xx that is not usable JSON),
    ``timeout``, ``connection`` (refused, reset, DNS) or ``other`` (TLS verification,
    an answer over the size cap, an invalid URL or token)."""
    status = exc.status
    if status is not None:
        if status == 429 or (status == 403 and exc.transient):
            return "rate_limited"
        if status >= 500:
            return "server_error"
        return "client_error" if status >= 300 else "bad_answer"
    if "timed out" in str(exc):
        return "timeout"
    return "connection" if exc.transient else "other"


def _record(target: str | None, seconds: float, cause: str | None) -> None:
    sink = metrics.installed()
    if sink is None or f"{target}_errors_total" not in metrics.METRICS:
        return
    sink.observe(f"{target}_request_duration_seconds", seconds)
    if cause is not None:
        sink.inc(f"{target}_errors_total", {"cause": cause})


def exchange(
    method: str,
    url: str,
    *,
    token: str | None = None,
    auth_scheme: str = "Bearer",
    body: Any = None,
    timeout: float = 30,
    exit_code: int = EXIT_REVIEWER,
    accept_status: Collection[int] = (),
    max_bytes: int = MAX_RESPONSE_BYTES,
    headers: Mapping[str, str] | None = None,
    answer_headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send one JSON request and return ``(status, parsed JSON or None for an empty body)``.

    ``body`` (if not None) is sent as JSON. With ``token`` the request carries
    ``Authorization: <auth_scheme> <token>`` (``Bearer`` for OpenAI-compatible APIs,
    ``token`` for Forgejo). A 2xx answer, or one whose status is in ``accept_status``, is
    returned; anything else (another status, a network error, a timeout, a body over
    ``max_bytes`` or one that is not JSON) raises :class:`HttpError` with ``exit_code``.
    ``timeout`` bounds each network operation and the reading of the body. ``headers``
    are sent too (over the defaults: GitHub wants its own ``Accept``); ``answer_headers``,
    when given, receives the answer's headers (lower-case names).
    A rate-limited answer (:func:`rate_limit_wait`) is transient, to be retried after
    the reset.
    """
    where = f"{method} {display_url(url)}"
    check_url(url, what=where, exit_code=exit_code)
    extra = dict(headers or {})
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    headers.update(extra)
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if token:
        if not header_safe(token):
            raise HttpError(
                f"{where}: the token contains characters not allowed in a header", exit_code
            )
        headers["Authorization"] = f"{auth_scheme} {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    deadline = time.monotonic() + timeout
    try:
        with _opener().open(req, timeout=timeout) as response:
            status = response.status
            if answer_headers is not None:
                answer_headers.update((k.lower(), v) for k, v in response.headers.items())
            raw = _read_bounded(response, max_bytes, deadline)
    except urllib.error.HTTPError as exc:
        status = exc.code
        accepted = status in accept_status
        try:
            if accepted:
                raw = _read_bounded(exc, max_bytes, deadline)
            else:
                raw = exc.read(_ERROR_BODY_BYTES)
        except (OSError, ValueError, http.client.HTTPException):
            if accepted:
                raise HttpError(
                    f"{where}: HTTP {status}, answer unreadable", exit_code, status
                ) from None
            raw = b""
        finally:
            exc.close()
        if not accepted:
            detail = _error_detail(raw, token)
            if 300 <= status < 400:
                detail = "redirects are not followed"
            suffix = f" ({detail})" if detail else ""
            code, param = _error_fields(raw)
            wait = parse_retry_after(exc.headers)
            limited = rate_limit_wait(status, exc.headers)
            if wait is None and limited is not None:
                wait = limited
            secondary = wait is not None and status in (403, 429)
            raise HttpError(
                f"{where}: HTTP {status}{suffix}",
                exit_code,
                status,
                transient=True if secondary or limited is not None else None,
                retry_after=wait,
                code=code,
                param=param,
                detail=detail,
                headers=exc.headers,
            ) from None
    except TimeoutError:
        raise HttpError(
            f"{where}: timed out after {timeout:g}s", exit_code, transient=True
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise HttpError(
                f"{where}: timed out after {timeout:g}s", exit_code, transient=True
            ) from None
        text = clean_text(redact(str(reason), token), _ERROR_DETAIL_CHARS)
        # Connection refused or reset, DNS failure: the server may be back shortly. A
        # certificate that does not verify will not verify on the next try either.
        transient = not isinstance(reason, ssl.SSLCertVerificationError)
        raise HttpError(f"{where}: {text}", exit_code, transient=transient) from None
    except ValueError as exc:  # our size cap; also urllib's "invalid URL" errors
        text = clean_text(redact(str(exc), token), _ERROR_DETAIL_CHARS)
        raise HttpError(f"{where}: {text}", exit_code) from None
    except (OSError, http.client.HTTPException) as exc:
        # Connection reset mid-body, a truncated chunked answer, a TLS alert...
        text = clean_text(redact(f"{type(exc).__name__}: {exc}", token), _ERROR_DETAIL_CHARS)
        raise HttpError(f"{where}: {text}", exit_code, transient=True) from None
    if not raw.strip():
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise HttpError(f"{where}: HTTP {status} answer is not JSON", exit_code, status) from None
