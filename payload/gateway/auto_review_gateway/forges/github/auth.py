"""Who the gateway is on GitHub: a token, or a GitHub App with installation tokens.

A token (``GITHUB_TOKEN``, fine-grained or classic) is used as it is. A GitHub App
(``GITHUB_APP_ID`` and its private key) authenticates in two steps, as GitHub's
"Authenticating as a GitHub App installation" describes:

1. a JWT signed RS256 with the App's private key, ``iss`` the App id, ``iat`` 60 s in
   the past (clock drift), ``exp`` at most 10 minutes ahead (GitHub refuses longer);
2. with it, ``apps/get-repo-installation`` ``GET /repos/{owner}/{repo}/installation``
   names the installation, and ``apps/create-installation-access-token``
   ``POST /app/installations/{id}/access_tokens`` (``{"repositories": [repo]}``) mints
   a token for that repository, valid for an hour (``expires_at``).

Installation tokens are cached per repository until :data:`REFRESH_BEFORE` seconds
before they expire. The signing is the ``cryptography`` package's (imported only when
an App is configured); no crypto is written here.
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core.model import EXIT_CONFIG, EXIT_POST, ReviewError

JWT_BACKDATE = 60  # seconds: GitHub's advice against clock drift
JWT_LIFETIME = 540  # seconds ahead; GitHub refuses an exp more than 10 minutes ahead
REFRESH_BEFORE = 300  # seconds: a cached installation token is renewed this long before expiry
# The rootfs's directory of native packages (a C or Rust extension cannot be imported
# from gateway.pyz): its .pth names the site dirs of cryptography and cffi's
# _cffi_backend (buildsys/native.py; payload/rootfs.toml's native_site).
NATIVE_SITE = "/usr/lib/auto-review/site"

# (method, url, token, body) -> parsed answer; the GitHub client's retried sender.
Sender = Callable[[str, str, str, Any], Any]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def add_native_site_dirs() -> None:
    """Make the native packages importable (the gateway runs with -S, so no site dir is
    on its path): the rootfs's NATIVE_SITE and the dirs its .pth names; where there is
    none (``--bare`` on a host), this interpreter's own site dirs, appended without
    running their .pth files."""
    if NATIVE_SITE in sys.path:
        return
    import site

    if os.path.isdir(NATIVE_SITE):
        site.addsitedir(NATIVE_SITE)
        return
    for path in site.getsitepackages():
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)


def load_private_key(pem: bytes) -> Any:
    """The App's RSA private key from PEM; ReviewError(EXIT_CONFIG) if it is not one."""
    add_native_site_dirs()
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise ReviewError(
            "GitHub App auth needs the cryptography package, which neither this build "
            "nor this interpreter has; use GITHUB_TOKEN instead",
            EXIT_CONFIG,
        ) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ReviewError(
            "the GitHub App private key is not an unencrypted PEM private key", EXIT_CONFIG
        ) from None
    except Exception as exc:  # UnsupportedAlgorithm (an SM2 key), OpenSSL's InternalError
        raise ReviewError(
            f"the GitHub App private key cannot be loaded ({type(exc).__name__}): "
            "use the RSA key GitHub generated",
            EXIT_CONFIG,
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ReviewError("the GitHub App private key must be an RSA key", EXIT_CONFIG)
    return key


def app_jwt(app_id: str, key: Any, now: float) -> str:
    """The App's JWT (RS256) at time ``now`` (epoch seconds)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {"iat": int(now) - JWT_BACKDATE, "exp": int(now) + JWT_LIFETIME, "iss": app_id}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


def parse_expiry(text: Any) -> float | None:
    """``expires_at`` (``2016-07-11T22:14:10Z``) as epoch seconds, or None."""
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


class TokenAuth:
    """``GITHUB_TOKEN``: the same token for every repository."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token_for(self, owner: str, repo: str, send: Sender, api_url: str) -> str:
        """The token to act on ``owner/repo`` with."""
        return self._token


class AppAuth:
    """A GitHub App: installation tokens minted per repository and cached."""

    def __init__(self, app_id: str, private_key_pem: bytes, *, clock: Any = None) -> None:
        """ReviewError(EXIT_CONFIG) if the key cannot be used."""
        self.app_id = app_id
        self._key = load_private_key(private_key_pem)
        self.clock = time.time if clock is None else clock
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.minted = 0  # installation tokens minted so far (for /metrics and tests)

    def jwt(self) -> str:
        """A fresh App JWT."""
        return app_jwt(self.app_id, self._key, self.clock())

    def token_for(self, owner: str, repo: str, send: Sender, api_url: str) -> str:
        """An installation token for ``owner/repo``, from the cache while it has more
        than REFRESH_BEFORE seconds left; HttpError/ReviewError when GitHub refuses."""
        key = (owner.lower(), repo.lower())
        with self._lock:
            cached = self._cache.get(key)
            if cached and cached[1] - self.clock() > REFRESH_BEFORE:
                return cached[0]
        jwt = self.jwt()
        where = f"{api_url}/repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(repo)}"
        installation = send("GET", f"{where}/installation", jwt, None)
        inst_id = installation.get("id") if isinstance(installation, dict) else None
        if not isinstance(inst_id, int) or isinstance(inst_id, bool):
            raise ReviewError("GitHub's installation answer has no id", EXIT_POST)
        url = f"{api_url}/app/installations/{inst_id}/access_tokens"
        doc = send("POST", url, jwt, {"repositories": [repo]})
        token = doc.get("token") if isinstance(doc, dict) else None
        expires = parse_expiry(doc.get("expires_at") if isinstance(doc, dict) else None)
        if not isinstance(token, str) or not token or expires is None:
            raise ReviewError("GitHub's access token answer is unusable", EXIT_POST)
        with self._lock:
            self._cache[key] = (token, expires)
            self.minted += 1
        return token

    def forget(self, owner: str, repo: str, token: str) -> None:
        """Drop ``token`` from the cache (GitHub refused it)."""
        key = (owner.lower(), repo.lower())
        with self._lock:
            if self._cache.get(key, ("",))[0] == token:
                del self._cache[key]

    def tokens(self) -> list[str]:
        """The installation tokens held (to redact them from messages)."""
        with self._lock:
            return [token for token, _ in self._cache.values()]
