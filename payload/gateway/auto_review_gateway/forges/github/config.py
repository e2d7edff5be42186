"""The GitHub settings: where GitHub is and who the gateway is there (:class:`GitHubConfig`).

Settings (:func:`load_config`): ``GITHUB_API_URL`` (default ``https://api.github.com``;
GHES ``https://HOST/api/v3``), and ``GITHUB_TOKEN`` or ``GITHUB_APP_ID`` with the App's
private key (:func:`app_private_key`): ``GITHUB_APP_PRIVATE_KEY``, the PEM itself, which
the launcher reads from the host file ``GITHUB_APP_PRIVATE_KEY_FILE`` names and sends by
the secrets pipe (the host path never enters the sandbox); else the file
``GITHUB_APP_PRIVATE_KEY_FILE`` names where the gateway runs (a gateway started without
the launcher, as in the container image); else ``<state dir>/github-app.pem``.

Names missing from the environment are read from ``<state dir>/github.env``
(``NAME=value`` lines), which is how settings reach a gateway run by a launcher that
passes only its own allowlist of variables. Only the names in :data:`NAMES` are taken
from it, and ``GITHUB_APP_PRIVATE_KEY`` is not one: a key belongs in no file the
sandboxed gateway can write. (``GITHUB_TOKEN`` still is, as existing setups keep it
there; the launcher's secrets pipe is the better way for it too.)
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from auto_review_gateway.core import boundedfile, httpjson, names
from auto_review_gateway.core.model import EXIT_CONFIG, ReviewError

DEFAULT_API_URL = "https://api.github.com"
SETTINGS_FILE = "github.env"
KEY_FILE = "github-app.pem"
KEY_VARIABLE = "GITHUB_APP_PRIVATE_KEY"  # the PEM itself: from the environment only
KEY_MAX = 16 << 10  # as the launcher's APP_KEY_MAX: OpenSSL's largest RSA key fits
NAMES = (
    "GITHUB_API_URL",
    "GITHUB_TOKEN",
    "GITHUB_APP_ID",
    "GITHUB_APP_PRIVATE_KEY_FILE",
    "GITHUB_MIN_ASSOCIATION",
)


@dataclass(frozen=True)
class GitHubConfig:
    """Where GitHub is and who the gateway is there."""

    api_url: str
    static_token: str = ""
    app_id: str = ""
    private_key: bytes = b""
    min_association: str = "COLLABORATOR"
    timeout: float = 30.0
    kind = "github"

    def __repr__(self) -> str:
        auth = f"app {self.app_id}" if self.app_id else "token"
        return f"GitHubConfig(api_url={self.api_url!r}, auth={auth!r})"

    @property
    def token(self) -> str:
        """The static token ('' for an App): the secret to redact."""
        return self.static_token

    @property
    def web_url(self) -> str:
        """Where repositories are served: ``https://github.com`` for api.github.com
        (``api.`` dropped, as for GHE.com's ``api.SUBDOMAIN.ghe.com``), the host of a
        GHES ``https://HOST/api/v3``."""
        parts = urllib.parse.urlsplit(self.api_url)
        path = parts.path.rstrip("/")
        if path.endswith("/api/v3"):
            return f"{parts.scheme}://{parts.netloc}{path[: -len('/api/v3')]}"
        if parts.netloc.lower().startswith("api."):
            # api.github.com -> github.com; GHE.com's api.SUBDOMAIN.ghe.com likewise
            return f"{parts.scheme}://{parts.netloc[len('api.') :]}{path}"
        return f"{parts.scheme}://{parts.netloc}{path}"

    @property
    def plain_http(self) -> bool:
        """GitHub is HTTPS only."""
        return False

    def warning(self) -> str | None:
        """Nothing to warn of at start."""
        return None

    def repo_clone_url(self, owner: str, repo: str) -> str:
        """``<web>/<owner>/<repo>.git``."""
        return f"{self.web_url}/{urllib.parse.quote(owner)}/{urllib.parse.quote(repo)}.git"


def settings(env: Mapping[str, str]) -> dict[str, str]:
    """The GitHub settings: the environment's, else ``<state dir>/github.env``'s."""
    found = {n: env[n].strip() for n in NAMES if env.get(n, "").strip()}
    path = os.path.join(names.state_dir(env), SETTINGS_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read(64 * 1024).splitlines()
    except OSError:
        return found
    for line in lines:
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() in NAMES and name.strip() not in found and value.strip():
            found[name.strip()] = value.strip()
    return found


def configured(env: Mapping[str, str] | None = None) -> bool:
    """True when GitHub is the forge (``GITHUB_TOKEN`` or ``GITHUB_APP_ID`` is set);
    ReviewError(EXIT_CONFIG) when Forgejo's ``FORGEJO_BASE_URL`` is set too: a stray
    token (CI runners export ``GITHUB_TOKEN``) must not silently pick the other forge."""
    env = os.environ if env is None else env
    found = settings(env)
    github = bool(found.get("GITHUB_TOKEN") or found.get("GITHUB_APP_ID"))
    if github and env.get("FORGEJO_BASE_URL", "").strip():
        raise ReviewError(
            "both GitHub (GITHUB_TOKEN or GITHUB_APP_ID) and Forgejo (FORGEJO_BASE_URL) "
            "are configured: unset the settings of the forge this gateway does not serve",
            EXIT_CONFIG,
        )
    return github


def load_config(env: Mapping[str, str] | None = None) -> GitHubConfig:
    """The GitHub settings from ``env`` (default os.environ); ReviewError(EXIT_CONFIG)
    naming the variable (never its value) when one is missing or malformed."""
    env = os.environ if env is None else env
    found = settings(env)
    api = found.get("GITHUB_API_URL", DEFAULT_API_URL).rstrip("/")
    httpjson.check_url(api, what="GITHUB_API_URL", exit_code=EXIT_CONFIG)
    if not api.lower().startswith("https://"):
        raise ReviewError("GITHUB_API_URL must be https://", EXIT_CONFIG)
    association = found.get("GITHUB_MIN_ASSOCIATION", "COLLABORATOR").upper()
    if association not in ASSOCIATIONS:
        raise ReviewError(
            f"GITHUB_MIN_ASSOCIATION must be one of {', '.join(ASSOCIATIONS)}", EXIT_CONFIG
        )
    token = found.get("GITHUB_TOKEN", "")
    app_id = found.get("GITHUB_APP_ID", "")
    if token and app_id:
        raise ReviewError("set GITHUB_TOKEN or GITHUB_APP_ID, not both", EXIT_CONFIG)
    if token:
        if not httpjson.header_safe(token):
            raise ReviewError(
                "GITHUB_TOKEN contains characters not allowed in a header", EXIT_CONFIG
            )
        return GitHubConfig(api, static_token=token, min_association=association)
    if not app_id.isdigit():
        raise ReviewError("GITHUB_APP_ID must be the App's numeric id", EXIT_CONFIG)
    pem = app_private_key(env, found)
    return GitHubConfig(api, app_id=app_id, private_key=pem, min_association=association)


def app_private_key(env: Mapping[str, str], found: Mapping[str, str]) -> bytes:
    """The App's PEM: ``GITHUB_APP_PRIVATE_KEY`` from ``env`` (where the secrets pipe puts
    it), else the file ``GITHUB_APP_PRIVATE_KEY_FILE`` (in ``found``, the settings) names,
    else ``<state dir>/github-app.pem``; ReviewError(EXIT_CONFIG) naming the file."""
    inline = env.get(KEY_VARIABLE, "")
    if inline.strip():
        return os.fsencode(inline)
    key_file = found.get("GITHUB_APP_PRIVATE_KEY_FILE") or os.path.join(
        names.state_dir(env), KEY_FILE
    )
    try:
        return boundedfile.read_regular_file(key_file, KEY_MAX)
    except boundedfile.FileRefused as exc:
        raise ReviewError(f"GITHUB_APP_PRIVATE_KEY_FILE={key_file}{exc}", EXIT_CONFIG) from None


# author_association values, most trusted first (GitHub's "author-association" schema)
ASSOCIATIONS = (
    "OWNER",
    "MEMBER",
    "COLLABORATOR",
    "CONTRIBUTOR",
    "FIRST_TIME_CONTRIBUTOR",
    "FIRST_TIMER",
    "MANNEQUIN",
    "NONE",
)
