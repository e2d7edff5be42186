"""The gateway's webhook on a Forgejo (or Gitea) repository or organisation, through the
API (``webhook register|list|test``). Operations of the swagger (``v1_json.tmpl``):

* ``repoListHooks`` / ``orgListHooks`` ``GET .../hooks`` -> ``[Hook]``;
* ``repoCreateHook`` / ``orgCreateHook`` ``POST .../hooks`` with ``CreateHookOption``
  ``{"type", "config": {"url", "content_type", "secret"}, "events", "active",
  "branch_filter"}`` -> 201 ``Hook``;
* ``repoEditHook`` / ``orgEditHook`` ``PATCH .../hooks/{id}`` with ``EditHookOption``:
  ``events`` and ``branch_filter`` are sent every time, because the API resets the
  fields an edit leaves out (``routers/api/v1/utils/hook.go``, ``editHook``);
* ``repoTestHook`` ``POST /repos/{owner}/{repo}/hooks/{id}/tests`` -> 204: the forge
  sends its test delivery (organisations have no such route).

The events are README's three, by their API names: ``pull_request``,
``pull_request_sync``, ``pull_request_comment``. The API turns ``pull_request`` on with
the whole pull-request family (``pullHook`` in the same file: assign, label, milestone,
review ...), which the gateway answers 200 ``ignored``; a hook is the gateway's when its
URL's path ends in ``/webhooks/forgejo``. Its type is ``gitea``, which Forgejo and Gitea
both accept (Forgejo sends every family of headers whatever the type).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from auto_review_gateway.core import httpjson, names
from auto_review_gateway.core.model import EXIT_POST, EXIT_USAGE, ReviewError
from auto_review_gateway.forges.bodies import hook_summary
from auto_review_gateway.forges.forgejo.config import ForgejoConfig

EVENTS = ("pull_request", "pull_request_sync", "pull_request_comment")
PATH = "/webhooks/forgejo"
MAX_PAGES = 20


class Hooks:
    """The hooks of one repository (``OWNER/NAME``) or organisation."""

    forge = "forgejo"
    path = PATH

    def __init__(self, config: ForgejoConfig, *, repo: str | None, org: str | None) -> None:
        self.config = config
        self.org = org
        if repo is not None:
            owner, _, name = repo.partition("/")
            if not (names.is_name(owner) and names.is_name(name)):
                raise ReviewError("--repo must be OWNER/NAME ([A-Za-z0-9_.-]+)", EXIT_USAGE)
            self.base = f"{config.api_url}/repos/{owner}/{name}/hooks"
        else:
            if org is None or not names.is_name(org):
                raise ReviewError("--org must be an organisation name", EXIT_USAGE)
            self.base = f"{config.api_url}/orgs/{urllib.parse.quote(org)}/hooks"

    def _send(self, method: str, url: str, body: Any = None) -> Any:
        return httpjson.request(
            method,
            url,
            target="forge",
            token=self.config.token,
            auth_scheme="token",
            body=body,
            timeout=self.config.timeout,
            exit_code=EXIT_POST,
        )[1]

    def list(self) -> list[dict[str, Any]]:
        """Every hook, page by page."""
        out: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            got = self._send("GET", f"{self.base}?page={page}&limit=50")
            hooks = [h for h in got if isinstance(h, dict)] if isinstance(got, list) else []
            out += hooks
            if len(hooks) < 50:
                break
        return out

    summary = staticmethod(hook_summary)  # the same Hook shape on both forges

    @staticmethod
    def matches(summary: dict[str, Any], url: str) -> bool:
        """Whether a hook already is what ``register`` would make it."""
        wanted = set(EVENTS)
        same = summary["url"] == url and summary["content_type"] == "json"
        return same and summary["active"] and wanted <= set(summary["events"])

    def _body(self, url: str, secret: str) -> dict[str, Any]:
        config = {"url": url, "content_type": "json", "secret": secret, "http_method": "post"}
        return {"config": config, "events": list(EVENTS), "active": True, "branch_filter": "*"}

    def create(self, url: str, secret: str) -> dict[str, Any]:
        """``repoCreateHook`` / ``orgCreateHook``."""
        return self._send("POST", self.base, {"type": "gitea", **self._body(url, secret)})

    def edit(self, hook_id: int, url: str, secret: str) -> dict[str, Any]:
        """``repoEditHook`` / ``orgEditHook``: URL, secret, events, active, all at once."""
        return self._send("PATCH", f"{self.base}/{int(hook_id)}", self._body(url, secret))

    def trigger(self, hook_id: int) -> bool:
        """``repoTestHook`` (True), or False for an organisation (no such route)."""
        if self.org is not None:
            return False
        self._send("POST", f"{self.base}/{int(hook_id)}/tests")
        return True
