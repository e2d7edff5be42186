"""Is this host a container? `--bare` runs the gateway without the sandbox, which is only
sound where a container runtime already is the sandbox; on a plain host it is refused
unless AUTO_REVIEW_BARE=force says the operator means it.

The signs are the ones container engines leave: Docker's /.dockerenv, podman's
/run/.containerenv, systemd-nspawn's /run/systemd/container, a container engine's name
in PID 1's cgroup, `container=` in PID 1's environment (podman, nspawn, LXC), and the
variable Kubernetes sets in every pod (cgroup v2 pods show no engine in their cgroup).
"""

from __future__ import annotations

import os

from launcher import settings
from launcher.errors import ConfigError

MARKER_FILES = ("/.dockerenv", "/run/.containerenv", "/run/systemd/container")
CGROUP_WORDS = ("docker", "containerd", "kubepods", "libpod", "podman", "lxc", "buildkit")
SIGNS = "/.dockerenv, /run/.containerenv, a container cgroup or container= in PID 1's environment"


def evidence() -> str | None:
    """What shows that this process runs in a container, or None on a plain host."""
    for path in MARKER_FILES:
        if os.path.exists(path):
            return path
    try:
        with open("/proc/1/cgroup", encoding="utf-8", errors="replace") as fh:
            cgroup = fh.read()
    except OSError:
        cgroup = ""
    for word in CGROUP_WORDS:
        if word in cgroup:
            return f"PID 1's cgroup ({word})"
    try:
        with open("/proc/1/environ", "rb") as fh:
            environ = fh.read().split(b"\0")
    except OSError:  # not ours to read (another user's PID 1): no sign either way
        environ = []
    if any(item.startswith(b"container=") for item in environ):
        return "container= in PID 1's environment"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "a Kubernetes pod"
    return None


def refuse_bare_on_a_host() -> None:
    """ConfigError unless this is a container or AUTO_REVIEW_BARE=force."""
    if settings.bare() == "force" or evidence() is not None:
        return
    raise ConfigError(
        f"--bare runs the gateway without the sandbox, and this host is not a container"
        f" (no {SIGNS})",
        "drop --bare to run sandboxed; AUTO_REVIEW_BARE=force runs bare here anyway",
    )
