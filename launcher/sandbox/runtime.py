"""Which OCI runtime runs the sandbox, what it can do here, and why it was chosen.

Candidates are youki, crun, runc and runsc (gVisor), in that order, or the one
AUTO_REVIEW_RUNTIME names (a name on PATH or an absolute path). Each is judged
by what it supports on this host, not by its name alone:

- fd passing (`--preserve-fds`): runc, crun and youki pass the lifeline and the
  secrets pipe as fds 3 and 4; runsc has no such flag, so both go in on its
  stdin instead (launcher.sandbox.hostlink).
- rootless: runc, crun and youki with a user namespace. runsc `--rootless` does
  start (with the container's ids mapped to hostID 0 of the user namespace it makes
  first), but that namespace maps only our uid: the gateway is either the Sentry's
  root in its initial namespace (check's `uid` item fails) or an unmapped uid that
  cannot write its state dir. So runsc is refused rootless, with that reason.
- seccomp: every candidate applies the OCI filter; runsc only with
  `--oci-seccomp` (its Sentry is the boundary otherwise), which we always pass.
- cgroups: crun refuses a hybrid host whose unified hierarchy has controllers
  (`/sys/fs/cgroup/unified/cgroup.controllers` non-empty); a pure v1 host, or a
  hybrid one with an empty unified hierarchy, is fine.

Discovery reads files and spawns nothing (it runs on every warm start); the
version is asked only by `doctor` and `--verbose`. A candidate passed over keeps
the reason in `Runtime.skipped`, shown by both.
"""

from __future__ import annotations

import os

from launcher.errors import ConfigError, RuntimeMissing

PREFERENCE = ("youki", "crun", "runc", "runsc")
KNOWN = frozenset(PREFERENCE)
UNIFIED_CONTROLLERS = "/sys/fs/cgroup/unified/cgroup.controllers"
INSTALL_HINT = (
    "install one: apt-get install runc (or crun, runsc), dnf install runc,"
    " or set AUTO_REVIEW_RUNTIME"
)


class Runtime:
    """A chosen runtime: flavour, binary, why it was chosen, and what it supports."""

    __slots__ = ("name", "options", "path", "reason", "skipped")

    def __init__(self, name: str, path: str, reason: str, skipped: list[str] | None = None):
        self.name = name
        self.path = path
        self.reason = reason
        self.skipped = skipped or []
        self.options: list[str] = []  # global options for this run (set_mode)

    def set_mode(self, network: str) -> None:
        """Fix the global options every command of this run passes (runsc's flags);
        `network`: host, stack (user-mode networking) or none (loopback only)."""
        self.options = self.global_args(network)

    def command(self, *args: str) -> list[str]:
        """argv of `<runtime> <global options> args...`."""
        return [self.path, *self.options, *args]

    @property
    def passes_fds(self) -> bool:
        """Whether `--preserve-fds` hands extra fds to the container (runsc: no)."""
        return self.name != "runsc"

    @property
    def gvisor(self) -> bool:
        return self.name == "runsc"

    def log_args(self, log_file: str) -> list[str]:
        """Global options that send the runtime's own errors to `log_file` as JSON."""
        if self.name == "crun":
            return [f"--log=file:{log_file}", "--log-format=json"]
        return ["--log", log_file, "--log-format", "json"]

    def global_args(self, network: str) -> list[str]:
        """Options every command of this runtime needs here (before the verb).

        runsc: the OCI seccomp filter enforced by the Sentry too, and for the network
        either none at all (a loopback of the Sentry's own) or the Sentry's sockets as
        host sockets (`host`) in the namespace runsc is started in: the host's only
        with AUTO_REVIEW_NETWORK=host; otherwise the sandbox's own namespace that
        slirp4netns serves (launcher.sandbox.netfirst). Its own netstack (`sandbox`) is not used:
        Debian's runsc 20221219 takes any namespace for the host's on current kernels
        (its test looks for /proc/sys/net/core/rmem_default, now in every namespace).
        """
        if not self.gvisor:
            return []
        mode = "none" if network == "none" else "host"
        return ["--oci-seccomp", f"--network={mode}"]

    def fd_options(self) -> list[str]:
        """The options of `run`/`create` that pass the lifeline and secrets fds."""
        return ["--preserve-fds", "2"] if self.passes_fds else []

    def describe(self) -> str:
        """`name version at path (reason; skipped: ...)`, spawning the binary for its version."""
        text = f"{self.name} {version(self.path) or '(version unknown)'} at {self.path}"
        return text + f" ({'; '.join([self.reason, *self.skipped])})"


def which(name: str) -> str | None:
    """shutil.which without importing shutil (and its compression modules) on the warm path."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def version(path: str) -> str | None:
    """The runtime's version number (`X version N ...` on its first line), or None."""
    import subprocess

    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = (out.stdout.splitlines() or [""])[0].split()
    if "version" in words and words.index("version") + 1 < len(words):
        return words[words.index("version") + 1]
    return " ".join(words) or None


def cgroup_mode() -> str:
    """'v2' (unified), 'hybrid' or 'v1', from the layout of /sys/fs/cgroup."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    if os.path.exists(UNIFIED_CONTROLLERS) or os.path.isdir("/sys/fs/cgroup/unified"):
        return "hybrid"
    return "v1"


def unified_controllers() -> list[str]:
    """The controllers enabled in the hybrid host's unified (v2) hierarchy."""
    try:
        with open(UNIFIED_CONTROLLERS, encoding="ascii") as fh:
            return fh.read().split()
    except OSError:
        return []


def unusable(name: str, rootless: bool) -> str | None:
    """Why the runtime flavour `name` cannot run the sandbox on this host, or None."""
    if name == "crun" and cgroup_mode() == "hybrid":
        controllers = unified_controllers()
        if controllers:
            return (
                f"crun refuses this hybrid cgroup host: {UNIFIED_CONTROLLERS}"
                f" lists {' '.join(controllers)}"
            )
    if name == "runsc" and rootless:
        return (
            "runsc needs root here: rootless gVisor maps only our uid, so the gateway"
            " would be root in the Sentry's initial user namespace"
        )
    return None


def identify(path: str) -> str | None:
    """The flavour a binary names as the first word of its `--version` output, or None:
    a path in AUTO_REVIEW_RUNTIME must answer as an OCI runtime (/bin/true does not)."""
    import subprocess

    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, errors="replace"
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = (out.stdout.splitlines() or [""])[0].split()
    return words[0] if out.returncode == 0 and words and words[0] in KNOWN else None


def flavour(path: str) -> str:
    """runc, crun, youki or runsc from a binary's name (a wrapper keeps it in its name)."""
    base = os.path.basename(path)
    for name in PREFERENCE:
        if base.startswith(name):
            return name
    return "runc"  # the OCI CLI every runtime implements


def from_env(value: str, rootless: bool) -> Runtime:
    """The runtime named by AUTO_REVIEW_RUNTIME, or a clear error."""
    if os.path.isabs(value):
        if not (os.path.isfile(value) and os.access(value, os.X_OK)):
            raise RuntimeMissing(
                f"AUTO_REVIEW_RUNTIME={value} is not an executable file",
                "point it at runc, crun, youki or runsc, or unset it",
            )
        path = value
        if identify(path) is None:
            raise ConfigError(
                f"AUTO_REVIEW_RUNTIME={value} does not answer --version as an OCI runtime",
                f"point it at {', '.join(PREFERENCE)} (or a wrapper that passes --version on)",
            )
    elif value not in KNOWN:
        raise ConfigError(
            f"AUTO_REVIEW_RUNTIME={value!r} is not one of {', '.join(PREFERENCE)}"
            " or an absolute path",
            "set it to runc, crun, youki, runsc or a full path",
        )
    else:
        found = which(value)
        if found is None:
            raise RuntimeMissing(f"AUTO_REVIEW_RUNTIME={value} is not on PATH", INSTALL_HINT)
        path = found
    name = flavour(path)
    problem = unusable(name, rootless)
    if problem:
        alternative = "run as root for gVisor, or unset it" if name == "runsc" else "use runc here"
        raise RuntimeMissing(f"AUTO_REVIEW_RUNTIME={value}: {problem}", alternative)
    return Runtime(name, path, "AUTO_REVIEW_RUNTIME")


def discover(rootless: bool | None = None) -> Runtime:
    """The runtime to use here (as root, or rootless when `rootless`; default: our euid)."""
    if rootless is None:
        rootless = os.geteuid() != 0
    value = os.environ.get("AUTO_REVIEW_RUNTIME", "").strip()
    if value:
        return from_env(value, rootless)
    skipped = []
    for name in PREFERENCE:
        path = which(name)
        if path is None:
            continue
        problem = unusable(name, rootless)
        if problem:
            skipped.append(f"{name} skipped: {problem}")
            continue
        return Runtime(name, path, "first usable on PATH", skipped)
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise RuntimeMissing(
        f"no OCI runtime ({', '.join(PREFERENCE)}) usable on PATH{detail}", INSTALL_HINT
    )
