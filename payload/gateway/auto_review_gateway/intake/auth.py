"""Who sent a POST: a webhook's HMAC-SHA256 signature of the body, or a CI job's bearer
token, each compared in constant time."""

from __future__ import annotations

import hashlib
import hmac


def signature_ok(secret: bytes, raw: bytes, signature: str | None) -> bool:
    """True if ``signature`` is the hex HMAC-SHA256 of ``raw`` under ``secret``.

    The comparison is constant-time; a ``sha256=`` prefix (GitHub's style) is allowed.
    """
    if not signature:
        return False
    given = signature.strip().lower()
    if given.startswith("sha256="):
        given = given[len("sha256=") :]
    expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))


def bearer_ok(token: str, authorization: str | None) -> bool:
    """True if ``authorization`` is ``Bearer <token>`` (constant-time comparison)."""
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.encode("utf-8"), given.strip().encode("utf-8", "replace"))
