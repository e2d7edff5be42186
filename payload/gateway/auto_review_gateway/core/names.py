"""One model of what the gateway names: owners, repositories, commit SHAs, the state dir.

Every module that takes a name or a SHA from outside (a webhook, a CI call, the command
line, the job database) checks it here, so one rule holds everywhere:

* an owner or repository name is 1-100 characters of ``[A-Za-z0-9_.-]``, not ``.`` or
  ``..`` (what Forgejo accepts for user and repository names; it also keeps the name
  safe in an API path and a clone URL);
* a commit SHA is 40 (SHA-1) or 64 (SHA-256 repositories) hex digits, lower-cased.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

STATE_DIR = "/var/lib/auto-review"  # where the launcher binds the state dir
STATE_DIR_ENV = "AUTO_REVIEW_STATE_DIR_INSIDE"
JOBS_DB = "jobs.sqlite3"
MAX_NAME_CHARS = 100

_NAME = re.compile(r"\A[A-Za-z0-9_.-]{1,100}\Z")
_SHA = re.compile(r"\A(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")


def is_name(value: object) -> bool:
    """True for a valid owner or repository name (see the module doc)."""
    return isinstance(value, str) and bool(_NAME.match(value)) and value not in (".", "..")


def is_sha(value: object) -> bool:
    """True for a full hex commit SHA (40 or 64 digits, either case)."""
    return isinstance(value, str) and bool(_SHA.match(value.lower()))


def state_dir(env: Mapping[str, str] | None = None) -> str:
    """The state dir inside the sandbox: ``$AUTO_REVIEW_STATE_DIR_INSIDE`` or the default."""
    env = os.environ if env is None else env
    return env.get(STATE_DIR_ENV, "").strip() or STATE_DIR


def jobs_db(env: Mapping[str, str] | None = None) -> str:
    """The job queue's database in the state dir."""
    return os.path.join(state_dir(env), JOBS_DB)
