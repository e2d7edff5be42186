"""Which OCI runtime runs the sandbox, and why.

AUTO_REVIEW_RUNTIME (a name on PATH or an absolute path) wins; otherwise the
first of youki, crun, runc found on PATH. crun 1.8 refuses cgroup v1/hybrid
hosts, so there crun is only taken when named explicitly. Discovery spawns
nothing (it runs on every warm start); `doctor` asks for versions.
"""

from __future__ import annotations

import os

from launcher.errors import ConfigError, RuntimeMissing

PREFERENCE = ("youki", "crun", "runc")
KNOWN = frozenset(PREFERENCE)
INSTALL_HINT = (
    "install one: apt-get install runc (or crun), dnf install runc, or set AUTO_REVIEW_RUNTIME"
)


class Runtime:
    """A chosen runtime: its flavour (runc/crun/youki), binary and the reason it was chosen."""

    __slots__ = ("name", "path", "reason")

    def __init__(self, name: str, path: str, reason: str) -> None:
        self.name = name
        self.path = path
        self.reason = reason

    def log_args(self, log_file: str) -> list[str]:
        """Global options that send the runtime's own errors to `log_file` as JSON."""
        if self.name == "crun":
            return [f"--log=file:{log_file}", "--log-format=json"]
        return ["--log", log_file, "--log-format", "json"]


def which(name: str) -> str | None:
    """shutil.which without importing shutil (and its compression modules) on the warm path."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def cgroup_mode() -> str:
    """'v2' (unified), 'hybrid' or 'v1', from the layout of /sys/fs/cgroup."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    if os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers") or os.path.isdir(
        "/sys/fs/cgroup/unified"
    ):
        return "hybrid"
    return "v1"


def flavour(path: str) -> str:
    """runc, crun or youki from a binary's name (a wrapper keeps its flavour in its name)."""
    base = os.path.basename(path)
    for name in PREFERENCE:
        if base.startswith(name):
            return name
    return "runc"  # the OCI CLI every runtime implements


def from_env(value: str) -> Runtime:
    """The runtime named by AUTO_REVIEW_RUNTIME, or a clear error."""
    if os.path.isabs(value):
        if not (os.path.isfile(value) and os.access(value, os.X_OK)):
            raise RuntimeMissing(
                f"AUTO_REVIEW_RUNTIME={value} is not an executable file",
                "point it at runc, crun or youki, or unset it",
            )
        return Runtime(flavour(value), value, "AUTO_REVIEW_RUNTIME")
    if value not in KNOWN:
        raise ConfigError(
            f"AUTO_REVIEW_RUNTIME={value!r} is not one of {', '.join(PREFERENCE)}"
            " or an absolute path",
            "set it to runc, crun, youki or a full path",
        )
    path = which(value)
    if path is None:
        raise RuntimeMissing(f"AUTO_REVIEW_RUNTIME={value} is not on PATH", INSTALL_HINT)
    return Runtime(value, path, "AUTO_REVIEW_RUNTIME")


def discover() -> Runtime:
    """The runtime to use here."""
    value = os.environ.get("AUTO_REVIEW_RUNTIME", "").strip()
    if value:
        return from_env(value)
    skipped = []
    for name in PREFERENCE:
        path = which(name)
        if path is None:
            continue
        if name == "crun" and cgroup_mode() != "v2":
            skipped.append(f"crun skipped: cgroup {cgroup_mode()} host")
            continue
        reason = "first found on PATH" + (f" ({'; '.join(skipped)})" if skipped else "")
        return Runtime(name, path, reason)
    raise RuntimeMissing("no OCI runtime (youki, crun or runc) found on PATH", INSTALL_HINT)
