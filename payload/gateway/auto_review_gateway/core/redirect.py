"""Where a git server redirects a fetch: asked once more, without following the answer.

git fetches with its redirects off whenever it carries a credential (a token in an
``extraHeader``, or ``user:token@`` in the URL), because git sends that credential on every
request of the fetch to wherever the first answer pointed. git then says only "The
requested URL returned error: 302"; :func:`redirect_origin` repeats git's first request
(``info/refs``), to the same URL with the same credential, and reads the ``Location``
without going there, so the error can name the origin the server sent us to.
"""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

PROBE_TIMEOUT = 10.0  # seconds
_REFUSED = re.compile(r"returned error: (3[0-9][0-9])\b")
_HOST = re.compile(r"[a-z0-9._:-]+")  # a plain name or address; nothing else is shown


def refused_status(message: str) -> int | None:
    """The 3xx status of git's "The requested URL returned error: 3xx" in ``message``."""
    match = _REFUSED.search(message)
    return int(match.group(1)) if match else None


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries ``user[:password]@``."""
    try:
        return "@" in urllib.parse.urlsplit(url).netloc
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object) -> None:
        return None  # urllib then raises HTTPError for the 3xx itself


def _without_userinfo(url: str) -> tuple[str, str, str]:
    """``url`` without its ``user:password@``, and the user and password ('' if none)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, "", ""
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, urllib.parse.unquote(user), urllib.parse.unquote(password)


def redirect_origin(
    url: str, header: str | None = None, timeout: float = PROBE_TIMEOUT
) -> str | None:
    """The origin (``scheme://host[:port]``) the git server at ``url`` redirects its
    first request to, asked with ``header`` (``Name: value``) or the URL's own
    credentials; None when it does not redirect (this time) or cannot be asked."""
    try:
        bare, user, password = _without_userinfo(url)
    except ValueError:
        return None
    probe = bare.rstrip("/") + "/info/refs?service=git-upload-pack"
    headers: dict[str, str] = {}
    if header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    elif user or password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {basic}"
    handlers = (urllib.request.HTTPSHandler(context=ssl.create_default_context()), _NoRedirect())
    try:
        request = urllib.request.Request(probe, headers=headers)
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location") if 300 <= exc.code < 400 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    try:
        target = urllib.parse.urlsplit(urllib.parse.urljoin(probe, location or ""))
        host, port = target.hostname, target.port
    except ValueError:
        return None
    if not location or not host or not _HOST.fullmatch(host):
        return None
    if target.scheme not in ("http", "https"):
        return None
    secrets = [v.rpartition(" ")[2] for v in headers.values()] + [user, password]
    if any(len(secret) >= 3 and secret.lower() in host for secret in secrets):
        return None  # a host name made of the credential is not shown
    host = f"[{host}]" if ":" in host else host
    return f"{target.scheme}://{host}" + (f":{port}" if port is not None else "")
