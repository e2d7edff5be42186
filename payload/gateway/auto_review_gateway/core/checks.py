"""One line of a deployment check (:class:`Check`): what ``preflight`` prints for each
thing it asks of the forge, the secrets and the model server. The forges and the
reviewer each return their own; the command puts them in order."""

from __future__ import annotations

from dataclasses import asdict, dataclass

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"


@dataclass(frozen=True)
class Check:
    """``name``: what was checked; ``state``: PASS, FAIL, WARN (works, but see the
    fix) or SKIP (not configured); ``detail``: what was seen (never a secret);
    ``fix``: what to do when it is not PASS."""

    name: str
    state: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        """True for FAIL (a WARN or SKIP does not stop the deployment)."""
        return self.state == FAIL

    def as_dict(self) -> dict[str, str | bool]:
        """The check as a JSON-ready mapping, with ``ok`` (not FAIL) as ``doctor``'s
        items have it."""
        return {**asdict(self), "ok": not self.failed}


def from_error(name: str, exc: Exception, fix: str) -> Check:
    """A FAIL whose detail is ``exc``'s one-line message (HTTP errors are redacted where
    they are raised)."""
    return Check(name, FAIL, " ".join(str(exc).split())[:300], fix)
