"""The launcher's AUTO_REVIEW_* switches, each read and checked in one place.

`check()` runs before any command does its work (doctor reports them as findings
instead), so a bad value is exit 78 with the fix at once: not when a lock happens to
be busy, nor after the rootfs was unpacked. The settings that name a file or a
directory (CA file, cache, state) and AUTO_REVIEW_RUNTIME are checked where they are
opened or discovered, still before anything is unpacked. Environment lookups only:
the warm path pays microseconds.
"""

from __future__ import annotations

import os

from launcher.errors import ConfigError

DEFAULT_LOCK_TIMEOUT = 300.0
NETWORKS = ("isolated", "host")
SWITCH = ("", "0", "1")


def _get(name: str) -> str:
    return os.environ.get(name, "").strip()


def lock_timeout() -> float:
    """Seconds to wait for a busy lock: AUTO_REVIEW_LOCK_TIMEOUT, else 300."""
    value = _get("AUTO_REVIEW_LOCK_TIMEOUT")
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e7:
        raise ConfigError(
            f"AUTO_REVIEW_LOCK_TIMEOUT={value!r} is not a number of seconds",
            "set it to a positive number, e.g. 300",
        )
    return seconds


def bare() -> str:
    """AUTO_REVIEW_BARE: '' (sandboxed), '1' (bare, inside a container only) or 'force'."""
    value = _get("AUTO_REVIEW_BARE")
    if value not in (*SWITCH, "force"):
        raise ConfigError(
            f"AUTO_REVIEW_BARE={value!r} is not 0, 1 or force",
            "unset it to run sandboxed; 1 runs bare inside a container, force anywhere",
        )
    return "" if value == "0" else value


def network() -> str:
    """AUTO_REVIEW_NETWORK: isolated (the default) or host."""
    value = _get("AUTO_REVIEW_NETWORK") or "isolated"
    if value not in NETWORKS:
        raise ConfigError(
            f"AUTO_REVIEW_NETWORK={value!r} is not one of {', '.join(NETWORKS)}",
            "unset it (isolated) or set it to host",
        )
    return value


def host_loopback() -> bool:
    """AUTO_REVIEW_HOST_LOOPBACK=1: the host's 127.0.0.1 is reachable as 10.0.2.2."""
    value = _get("AUTO_REVIEW_HOST_LOOPBACK")
    if value not in SWITCH:
        raise ConfigError(
            f"AUTO_REVIEW_HOST_LOOPBACK={value!r} is not 0 or 1",
            "set it to 1 to reach this host's services as 10.0.2.2, or unset it",
        )
    return value == "1"


def container_id() -> str | None:
    """AUTO_REVIEW_CONTAINER_ID: a stable container name for a service (one instance),
    so systemd's ExecStopPost can `runc delete --force` it by name."""
    value = _get("AUTO_REVIEW_CONTAINER_ID")
    if not value:
        return None
    if not (value[0].isalnum() and all(c.isalnum() or c in "._-" for c in value)):
        raise ConfigError(
            f"AUTO_REVIEW_CONTAINER_ID={value!r} is not a valid container id",
            "use letters, digits, '.', '_' and '-'",
        )
    return value


def check() -> None:
    """Every switch above, checked now: ConfigError (78) for the first bad one."""
    lock_timeout()
    bare()
    network()
    host_loopback()
    container_id()
