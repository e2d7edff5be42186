"""``/readyz``'s question: does the job database answer, and the forge? Probed at most
once every READY_TTL seconds, with a short timeout, the answer cached in between."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from auto_review_gateway.core import httpjson
from auto_review_gateway.intake.endpoint import Intake

READY_TTL = 5.0
READY_PROBE_TIMEOUT = 3.0


class Readiness:
    """Whether the forge answers, probed at most once every ``ttl`` seconds.

    ``probe`` raises on failure; its message becomes the reason (secrets redacted by
    ``redact``). Concurrent callers wait for the one probe in flight.
    """

    def __init__(
        self,
        probe: Callable[[], None],
        *,
        ttl: float = READY_TTL,
        redact: Callable[[str], str] = lambda text: httpjson.clean_text(text, 300),
    ) -> None:
        self._probe = probe
        self._ttl = ttl
        self._redact = redact
        self._lock = threading.Lock()
        self._result: tuple[bool, str] | None = None
        self._at = 0.0

    def check(self) -> tuple[bool, str]:
        """``(ready, reason)``, from the cache when it is fresh."""
        with self._lock:
            now = time.monotonic()
            if self._result is not None and now - self._at < self._ttl:
                return self._result
            try:
                self._probe()
                result = (True, "the job database and the forge answer")
            except Exception as exc:
                result = (False, self._redact(str(exc)) or type(exc).__name__)
            self._result, self._at = result, time.monotonic()
            return result


def forge_probe(intake: Intake) -> Callable[[], None]:
    """A probe for :class:`Readiness`: ``GET <forge>/api/v1/version`` with a short timeout."""

    from auto_review_gateway.forges.forgejo import client as forgejo

    if getattr(intake.forge, "kind", "") == "github":
        from auto_review_gateway.jobs import github_job

        # the jobs' client: an App's key is parsed once, its tokens cached once
        hub = github_job.client(intake.forge)  # type: ignore[arg-type]
        return lambda: hub.probe(READY_PROBE_TIMEOUT)
    client = forgejo.Forgejo(intake.forge, retry=None)

    def probe() -> None:
        client.version(READY_PROBE_TIMEOUT)

    return probe


def with_database(ping: Callable[[], None], forge: Callable[[], None]) -> Callable[[], None]:
    """A probe for :class:`Readiness`: the job store's ``ping``, then the forge's probe.
    A replica that cannot reach the shared database can take no webhook."""

    def probe() -> None:
        try:
            ping()
        except Exception as exc:
            raise RuntimeError(f"the job database does not answer: {exc}") from None
        forge()

    return probe
