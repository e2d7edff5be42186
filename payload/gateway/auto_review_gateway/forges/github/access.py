"""What ``preflight`` asks GitHub: does it answer (and which GHES version), who the
gateway is there, and whether its token or App may do what the gateway does. Nothing is
changed on GitHub. Operation ids of GitHub's OpenAPI description:

* ``meta/get`` ``GET /meta``: the API answers; GitHub Enterprise Server names its
  version in the ``x-github-enterprise-version`` header;
* a token: ``users/get-authenticated`` ``GET /user``: its owner; a classic token's
  scopes come in ``x-oauth-scopes`` ("Scopes for OAuth apps": ``repo`` covers statuses,
  pull requests and contents); a fine-grained token has no scopes header, and its
  repository permissions are GitHub's to show;
* an App: ``apps/get-authenticated`` ``GET /app`` (its JWT) and
  ``apps/list-installations`` ``GET /app/installations``: each installation's
  ``permissions`` must include README's three: pull requests and commit statuses
  write, contents read.
"""

from __future__ import annotations

from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.checks import FAIL, PASS, WARN, Check, from_error
from auto_review_gateway.core.model import EXIT_POST
from auto_review_gateway.forges.github.auth import AppAuth
from auto_review_gateway.forges.github.client import HEADERS, GitHub

CLASSIC_SCOPES = ("repo",)
# App permission -> the least level it needs (write includes read)
APP_PERMISSIONS = {"pull_requests": "write", "statuses": "write", "contents": "read"}
TOKEN_FIX = (
    "set GITHUB_TOKEN to a fine-grained token with Pull requests and Commit statuses"
    " read and write and Contents read-only, or a classic token with the repo scope"
)
APP_FIX = (
    "in the App's settings (Permissions & events) grant Pull requests and Commit statuses"
    " read and write and Contents read-only, then accept the new permissions on each"
    " installation"
)


def _get(gh: GitHub, path: str, token: str, headers: dict[str, str] | None = None) -> Any:
    return httpjson.request(
        "GET",
        f"{gh.config.api_url}{path}",
        token=token,
        timeout=gh.timeout,
        exit_code=EXIT_POST,
        headers=HEADERS,
        answer_headers=headers,
    )[1]


def checks(gh: GitHub) -> list[Check]:
    """The API, the identity, its permissions: one :class:`Check` each."""
    seen: dict[str, str] = {}
    try:
        _get(gh, "/meta", "", seen)
    except httpjson.HttpError as exc:
        fix = "check GITHUB_API_URL (GHES: https://HOST/api/v3) and that this host reaches it"
        return [from_error("forge", exc, fix)]
    ghes = seen.get("x-github-enterprise-version")
    what = f"GitHub Enterprise Server {ghes}" if ghes else "GitHub"
    out = [Check("forge", PASS, f"{gh.config.api_url} answers: {what}")]
    if isinstance(gh.auth, AppAuth):
        return out + app_checks(gh, gh.auth)
    return out + token_checks(gh)


def token_checks(gh: GitHub) -> list[Check]:
    """``GET /user`` with the token: whose it is, and a classic token's scopes."""
    seen: dict[str, str] = {}
    try:
        user = _get(gh, "/user", gh.config.static_token, seen)
    except httpjson.HttpError as exc:
        if exc.status == 401:
            detail = "GITHUB_TOKEN is refused by GitHub (HTTP 401): wrong, expired or revoked"
            return [Check("token", FAIL, detail, TOKEN_FIX)]
        return [from_error("token", exc, TOKEN_FIX)]
    login = user.get("login") if isinstance(user, dict) else None
    out = [Check("token", PASS, f"valid: the token of {login!r}")]
    if "x-oauth-scopes" not in seen:
        detail = (
            "a fine-grained token: GitHub lists no scopes for it; its repository"
            " permissions are checked by GitHub on each call"
        )
        return [*out, Check("scopes", WARN, detail, TOKEN_FIX)]
    scopes = {s.strip() for s in seen["x-oauth-scopes"].split(",") if s.strip()}
    missing = [s for s in CLASSIC_SCOPES if s not in scopes]
    shown = ", ".join(sorted(scopes)) or "none"
    if missing:
        detail = f"the classic token lacks {', '.join(missing)} (it has: {shown})"
        return [*out, Check("scopes", FAIL, detail, TOKEN_FIX)]
    return [*out, Check("scopes", PASS, f"classic token scopes: {shown}")]


def app_checks(gh: GitHub, auth: AppAuth) -> list[Check]:
    """``GET /app`` and ``GET /app/installations`` with the App's JWT."""
    fix = "check GITHUB_APP_ID and that GITHUB_APP_PRIVATE_KEY_FILE is the App's current key"
    try:
        app = _get(gh, "/app", auth.jwt())
        installations = _get(gh, "/app/installations?per_page=100", auth.jwt())
    except httpjson.HttpError as exc:
        return [from_error("token", exc, fix)]
    slug = app.get("slug") if isinstance(app, dict) else None
    out = [Check("token", PASS, f"the App {slug!r} (id {gh.config.app_id}) authenticates")]
    if not isinstance(installations, list) or not installations:
        detail = "the App is installed nowhere: it can review no repository"
        return [*out, Check("scopes", FAIL, detail, "install the App on the repositories")]
    short = []
    for inst in installations:
        perms = inst.get("permissions") if isinstance(inst, dict) else None
        perms = perms if isinstance(perms, dict) else {}
        lacking = [
            f"{name}:{level}"
            for name, level in APP_PERMISSIONS.items()
            if perms.get(name) not in ((level, "write") if level == "read" else (level,))
        ]
        if lacking:
            account = (inst.get("account") or {}).get("login") if isinstance(inst, dict) else ""
            short.append(f"{account or '?'} lacks {', '.join(lacking)}")
    if short:
        return [*out, Check("scopes", FAIL, "; ".join(short), APP_FIX)]
    wanted = ", ".join(f"{k}:{v}" for k, v in APP_PERMISSIONS.items())
    return [*out, Check("scopes", PASS, f"{len(installations)} installation(s) grant {wanted}")]
