"""The gateway's webhook on a GitHub repository, through the REST API (``webhook
register|list|test`` with a token; a GitHub App has one webhook, set in its settings).
Operation ids of GitHub's OpenAPI description:

* ``repos/list-webhooks`` ``GET /repos/{owner}/{repo}/hooks`` -> ``[hook]``;
* ``repos/create-webhook`` ``POST /repos/{owner}/{repo}/hooks`` ``{"name": "web",
  "active", "events", "config": {"url", "content_type", "insecure_ssl", "secret"}}``
  -> 201 ``hook``;
* ``repos/update-webhook`` ``PATCH /repos/{owner}/{repo}/hooks/{hook_id}`` (``events``
  replaces the whole list);
* ``repos/ping-webhook`` ``POST .../hooks/{hook_id}/pings`` -> 204, and
  ``repos/list-webhook-deliveries`` ``GET .../hooks/{hook_id}/deliveries``: each
  delivery's ``event`` and ``status_code``, the gateway's answer as GitHub saw it.

The events are README's: ``pull_request`` and ``issue_comment``; a hook is the
gateway's when its URL's path ends in ``/webhooks/github``. GitHub never returns a
hook's secret (``config.secret`` comes back as asterisks).
"""

from __future__ import annotations

from typing import Any

from auto_review_gateway.core import names
from auto_review_gateway.core.model import EXIT_USAGE, ReviewError
from auto_review_gateway.forges.bodies import hook_summary
from auto_review_gateway.forges.github.client import GitHub

EVENTS = ("issue_comment", "pull_request")
PATH = "/webhooks/github"


class Hooks:
    """The hooks of one repository ``OWNER/NAME``, with the client's token."""

    forge = "github"
    path = PATH

    def __init__(self, gh: GitHub, repo: str) -> None:
        owner, _, name = repo.partition("/")
        if not (names.is_name(owner) and names.is_name(name)):
            raise ReviewError("--repo must be OWNER/NAME ([A-Za-z0-9_.-]+)", EXIT_USAGE)
        self.gh = gh
        self.base = f"{gh.config.api_url}/repos/{owner}/{name}/hooks"
        self.token = gh.config.static_token

    def _send(self, method: str, url: str, body: Any = None) -> Any:
        return self.gh.send(method, url, self.token, body)

    def list(self) -> list[dict[str, Any]]:
        """``repos/list-webhooks`` (the first 100: a repository has at most 20)."""
        got = self._send("GET", f"{self.base}?per_page=100")
        return [h for h in got if isinstance(h, dict)] if isinstance(got, list) else []

    summary = staticmethod(hook_summary)  # the same Hook shape on both forges

    @staticmethod
    def matches(summary: dict[str, Any], url: str) -> bool:
        """Whether a hook already is what ``register`` would make it."""
        same = summary["url"] == url and summary["content_type"] == "json"
        return same and summary["active"] and summary["events"] == list(EVENTS)

    def _body(self, url: str, secret: str) -> dict[str, Any]:
        config = {"url": url, "content_type": "json", "insecure_ssl": "0", "secret": secret}
        return {"active": True, "events": list(EVENTS), "config": config}

    def create(self, url: str, secret: str) -> dict[str, Any]:
        """``repos/create-webhook``."""
        return self._send("POST", self.base, {"name": "web", **self._body(url, secret)})

    def edit(self, hook_id: int, url: str, secret: str) -> dict[str, Any]:
        """``repos/update-webhook``: URL, secret, events, active, all at once."""
        return self._send("PATCH", f"{self.base}/{int(hook_id)}", self._body(url, secret))

    def trigger(self, hook_id: int) -> bool:
        """``repos/ping-webhook``: GitHub sends a ``ping`` delivery."""
        self._send("POST", f"{self.base}/{int(hook_id)}/pings")
        return True

    def deliveries(self, hook_id: int) -> list[dict[str, Any]]:
        """``repos/list-webhook-deliveries``, newest first."""
        got = self._send("GET", f"{self.base}/{int(hook_id)}/deliveries?per_page=30")
        return [d for d in got if isinstance(d, dict)] if isinstance(got, list) else []
