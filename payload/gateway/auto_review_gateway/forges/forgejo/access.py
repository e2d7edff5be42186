"""What ``preflight`` asks Forgejo (or Gitea): does it answer, which version, whose is
the token, and may the token do what the gateway does. Nothing is changed on the forge.

Following the swagger (``templates/swagger/v1_json.tmpl``): ``getVersion``
``GET /version``; ``userGetCurrent`` ``GET /user`` (the token's owner, and the
``read:user`` scope the gateway needs to find its own pending reviews).

Scopes: a Forgejo token carries scopes (``write:repository``, ``read:user`` ...), and
Forgejo has no API that lists a token's scopes to the token itself. Its API checks them
before anything else on a route (``routers/api/v1/api.go``: ``tokenRequiresScopes`` on
each group, before the repository is even looked up), answering 403 "token does not have
at least one of required scope(s): [...]". So ``write:repository`` (statuses, reviews,
hooks) is probed with ``repoEdit`` ``PATCH /repos/{me}/{probe}`` and an empty
``EditRepoOption``: with the scope the answer is 404 (no such repository) or, were it
to exist, a 200 that changes nothing; without it, the 403.
"""

from __future__ import annotations

from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.checks import FAIL, PASS, Check, from_error
from auto_review_gateway.core.model import EXIT_POST
from auto_review_gateway.forges.forgejo.config import ForgejoConfig

SCOPES = ("write:repository", "read:user")  # README's list, and what the gateway uses
SCOPE_REFUSED = "does not have at least one of required scope"
PROBE_REPO = "auto-review-scope-probe"
TOKEN_FIX = (
    "create a token for the bot user (Settings, Applications, Generate new token) with"
    f" scopes {' and '.join(SCOPES)}, and set it as AR_FORGEJO_TOKEN"
)


def _get(config: ForgejoConfig, path: str, *, token: bool = True) -> Any:
    return httpjson.request(
        "GET",
        f"{config.api_url}{path}",
        token=config.token if token else None,
        auth_scheme="token",
        timeout=config.timeout,
        exit_code=EXIT_POST,
    )[1]


def checks(config: ForgejoConfig) -> list[Check]:
    """The forge, the token, its scopes: one :class:`Check` each, in that order."""
    try:
        doc = _get(config, "/version", token=False)
        version = doc.get("version") if isinstance(doc, dict) else None
        out = [Check("forge", PASS, f"{config.base_url} answers: version {version or '?'}")]
    except httpjson.HttpError as exc:
        fix = "check FORGEJO_BASE_URL (the forge's web root) and that this host reaches it"
        return [from_error("forge", exc, fix)]
    try:
        user = _get(config, "/user")
    except httpjson.HttpError as exc:
        if exc.status == 401:
            detail = "AR_FORGEJO_TOKEN is refused by the forge (HTTP 401): wrong or revoked"
            return [*out, Check("token", FAIL, detail, TOKEN_FIX)]
        if exc.status == 403 and SCOPE_REFUSED in exc.detail:
            detail = "the token works but lacks read:user (GET /user: HTTP 403)"
            return [*out, Check("token", FAIL, detail, TOKEN_FIX)]
        return [*out, from_error("token", exc, TOKEN_FIX)]
    login = user.get("login") if isinstance(user, dict) else None
    if not isinstance(login, str) or not login:
        return [*out, Check("token", FAIL, "GET /user named no login", TOKEN_FIX)]
    out.append(Check("token", PASS, f"valid: the token of {login!r}"))
    return [*out, scope_check(config, login)]


def scope_check(config: ForgejoConfig, login: str) -> Check:
    """``write:repository`` probed as the module doc says (``read:user`` was shown by
    ``GET /user``)."""
    url = f"{config.api_url}/repos/{login}/{PROBE_REPO}"
    try:
        status, doc = httpjson.request(
            "PATCH",
            url,
            token=config.token,
            auth_scheme="token",
            body={},
            timeout=config.timeout,
            exit_code=EXIT_POST,
            accept_status=(403, 404),
        )
    except httpjson.HttpError as exc:
        return from_error("scopes", exc, TOKEN_FIX)
    message = doc.get("message") if isinstance(doc, dict) else ""
    if status == 403 and SCOPE_REFUSED in str(message):
        detail = "the token lacks write:repository (it cannot set statuses or post reviews)"
        return Check("scopes", FAIL, detail, TOKEN_FIX)
    return Check("scopes", PASS, f"{' and '.join(SCOPES)}: both granted")
