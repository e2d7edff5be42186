"""The Forgejo settings: where the forge is and the bot's token (:class:`ForgejoConfig`),
read from ``FORGEJO_BASE_URL`` and ``AR_FORGEJO_TOKEN`` by :func:`load_config`.

``FORGEJO_BASE_URL`` may be ``http://`` (a forge on a private network): then the
gateway warns, and plain HTTP is allowed to that host only.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.model import EXIT_CONFIG, ReviewError

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class ForgejoConfig:
    """Where and as whom to post, read from the environment by :func:`load_config`."""

    api_url: str  # https://host[/prefix]/api/v1
    token: str
    timeout: float = DEFAULT_TIMEOUT

    def __repr__(self) -> str:
        # The token is never shown, even when the config object is printed or logged.
        return f"ForgejoConfig(api_url={self.api_url!r}, token='***', timeout={self.timeout!r})"

    @property
    def base_url(self) -> str:
        """The forge's web root (``FORGEJO_BASE_URL`` without ``/api/v1``)."""
        return self.api_url[: -len("/api/v1")] if self.api_url.endswith("/api/v1") else self.api_url

    @property
    def plain_http(self) -> bool:
        """True when the forge is configured as ``http://`` (no TLS)."""
        return self.api_url.lower().startswith("http://")

    def warning(self) -> str | None:
        """The warning to log at start for an ``http://`` forge, else None."""
        if not self.plain_http:
            return None
        return (
            "warning: FORGEJO_BASE_URL is http://: the forge token and the repositories "
            "travel unencrypted; plain HTTP is allowed to that host only"
        )

    def repo_clone_url(self, owner: str, repo: str) -> str:
        """``<base>/<owner>/<repo>.git``, where Forgejo serves the repository over HTTP."""
        return f"{self.base_url}/{urllib.parse.quote(owner)}/{urllib.parse.quote(repo)}.git"


def load_config(env: Mapping[str, str] | None = None) -> ForgejoConfig:
    """``FORGEJO_BASE_URL`` and ``AR_FORGEJO_TOKEN`` from ``env`` (default: os.environ).

    The base URL may be given with or without a trailing ``/api/v1``. Raises
    ReviewError(EXIT_CONFIG) listing the missing or malformed variables by name only.
    """
    env = os.environ if env is None else env
    base = env.get("FORGEJO_BASE_URL", "").strip()
    token = env.get("AR_FORGEJO_TOKEN", "").strip()
    missing = [
        name
        for name, value in (("FORGEJO_BASE_URL", base), ("AR_FORGEJO_TOKEN", token))
        if not value
    ]
    if missing:
        raise ReviewError(f"missing environment variable(s): {', '.join(missing)}", EXIT_CONFIG)
    httpjson.check_url(base, what="FORGEJO_BASE_URL", exit_code=EXIT_CONFIG)
    if not httpjson.header_safe(token):
        raise ReviewError(
            "AR_FORGEJO_TOKEN contains characters not allowed in a header", EXIT_CONFIG
        )
    base = base.rstrip("/")
    if base.endswith("/api/v1"):
        base = base[: -len("/api/v1")]
    return ForgejoConfig(api_url=base + "/api/v1", token=token)
