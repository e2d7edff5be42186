"""One line of `doctor`'s report."""

from __future__ import annotations

import dataclasses

from launcher.errors import ExitCode


@dataclasses.dataclass
class Finding:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocker: bool = True
    exit_code: int = ExitCode.SANDBOX_FAILED
