"""`auto-review doctor`: can this host run the sandbox? Each problem comes with its fix.

The host facts come first; the last item starts a real sandbox and runs `check`
in it (launcher.doctor.start), and only if that passes is the host "ready".
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from launcher import settings
from launcher.doctor.decoder import check_zstd
from launcher.doctor.dirs import check_cache, check_runtime_dir, check_state
from launcher.doctor.finding import Finding
from launcher.errors import ExitCode, LauncherError
from launcher.sandbox import runtime

# what needs the user-mode network (slirp4netns and /dev/net/tun) under the default
NEEDS_NETWORK = "serve, review --repo, LLM reviews and review --post"


def check_python() -> Finding:
    v = sys.version_info
    ok = v >= (3, 10)
    return Finding(
        "python",
        ok,
        f"{v.major}.{v.minor}.{v.micro} ({sys.executable})",
        "" if ok else "run auto-review with Python 3.10 or newer",
    )


def check_runtime() -> tuple[Finding, runtime.Runtime | None]:
    """The runtime discovery picks, with its version, and every candidate it passed over."""
    try:
        rt = runtime.discover()
    except LauncherError as exc:
        return Finding("runtime", False, exc.message, exc.fix or "", exit_code=exc.exit_code), None
    if runtime.version(rt.path) is None:
        return Finding(
            "runtime",
            False,
            f"{rt.path} does not answer --version",
            "reinstall the runtime or set AUTO_REVIEW_RUNTIME to another one",
        ), None
    return Finding("runtime", True, rt.describe()), rt


def check_cgroups() -> Finding:
    """The host's cgroup layout (what crun is judged by), for the record."""
    mode = runtime.cgroup_mode()
    if mode == "hybrid":
        controllers = runtime.unified_controllers()
        mode += f" (unified hierarchy: {' '.join(controllers) or 'no controllers'})"
    return Finding("cgroups", True, mode, blocker=False)


def userns_usable() -> bool:
    """Probe: can an unprivileged child create a user namespace?"""
    code = (
        "import ctypes,os,sys\n"
        "f=getattr(os,'unshare',None)\n"
        "try:\n"
        "  f(0x10000000) if f else (ctypes.CDLL(None,use_errno=True).unshare(0x10000000)==0"
        " or sys.exit(1))\n"
        "except OSError: sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, timeout=10)
    return proc.returncode == 0


def check_userns() -> Finding:
    if os.geteuid() == 0:
        return Finding("userns", True, "not needed: running as root", blocker=False)
    if userns_usable():
        return Finding("userns", True, "unprivileged user namespaces work")
    return Finding(
        "userns",
        False,
        "cannot create a user namespace as an unprivileged user",
        "as root: sysctl -w kernel.unprivileged_userns_clone=1 (Debian)"
        " or user.max_user_namespaces=15000; or run as root",
    )


def check_settings() -> Finding:
    """The AUTO_REVIEW_* switches every other command checks before it starts."""
    try:
        settings.check()
    except LauncherError as exc:
        return Finding("settings", False, exc.message, exc.fix or "", exit_code=exc.exit_code)
    return Finding("settings", True, "AUTO_REVIEW_* values are valid", blocker=False)


def check_network() -> list[Finding]:
    """AUTO_REVIEW_NETWORK, slirp4netns and /dev/net/tun (which it opens as the caller)."""
    from launcher.sandbox import network

    try:
        mode = network.mode()
    except LauncherError as exc:
        return [Finding("network", False, exc.message, exc.fix or "", exit_code=exc.exit_code)]
    if mode == "host":
        return [
            Finding(
                "network",
                False,
                "AUTO_REVIEW_NETWORK=host: the sandbox shares the host's network",
                "unset AUTO_REVIEW_NETWORK for a namespace of its own",
                blocker=False,
            )
        ]
    try:
        path = network.slirp4netns()
    except LauncherError as exc:
        detail = f"{exc.message}: {NEEDS_NETWORK} will not work (check and review --path do)"
        return [Finding("network", False, detail, exc.fix or "", exit_code=exc.exit_code)]
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    version = (out.stdout.splitlines() or ["?"])[0]
    extra = "; host loopback opened (AUTO_REVIEW_HOST_LOOPBACK)" if network.host_loopback() else ""
    found = [Finding("network", True, f"isolated, {version} at {path}{extra}")]
    tun = "/dev/net/tun"
    ok = os.access(tun, os.R_OK | os.W_OK)
    found.append(
        Finding(
            "tun",
            ok,
            f"{tun} usable"
            if ok
            else f"{tun} not usable by this user: {NEEDS_NETWORK} will not work",
            f"as root: chmod 0666 {tun} (the distributions' default)",
        )
    )
    return found


def check_limits(rt: runtime.Runtime | None = None) -> Finding:
    """What caps the sandbox's processes and memory in this mode."""
    from launcher.sandbox import config

    if os.geteuid() == 0 and rt is not None and rt.gvisor:
        return Finding(
            "limits",
            True,
            f"runsc: RLIMIT_NPROC {config.PIDS_LIMIT} inside the Sentry, and its host cgroup"
            f" (pids {config.PIDS_LIMIT} for its threads, memory"
            f" {config.MEMORY_LIMIT >> 20} MiB where the controller exists)",
        )
    data = f"RLIMIT_DATA {config.DATA_LIMIT >> 20} MiB per process"
    if os.geteuid() == 0:
        if config.memory_bound(rootless=False) == "rlimit":
            return Finding(
                "limits",
                False,
                f"cgroup pids {config.PIDS_LIMIT}; memory: {data} only, no memory cgroup"
                " controller for a limit on the whole sandbox",
                "enable the memory controller (cgroup_enable=memory on the kernel command line)",
                blocker=False,
            )
        return Finding(
            "limits",
            True,
            f"cgroup pids {config.PIDS_LIMIT}, memory {config.MEMORY_LIMIT >> 20} MiB"
            " (memory+swap of the whole sandbox)",
        )
    return rootless_limits(data)


def rootless_limits(data: str) -> Finding:
    """Rootless: the cgroup limits of a delegated cgroup v2 subtree, where the host gave
    one (launcher.sandbox.cgroup2), else the rlimits. Only looks: nothing is moved."""
    from launcher.sandbox import cgroup2, config

    found = cgroup2.find()
    problem = cgroup2.obstacle(found) if found else None
    if found and not problem:
        return Finding(
            "limits",
            True,
            f"rootless, in the delegated cgroup {found.base}: cgroup pids {config.PIDS_LIMIT},"
            f" memory {config.MEMORY_LIMIT >> 20} MiB (memory+swap of the whole sandbox)",
        )
    why = f"delegated cgroup not usable: {problem}" if found else "no delegated cgroup v2 subtree"
    return Finding(
        "limits",
        True,
        f"rootless: pids capped by RLIMIT_NPROC {config.PIDS_LIMIT} (per user namespace);"
        f" memory: {data} ({why}; for a limit on the whole sandbox, run it in a systemd"
        " unit with Delegate=yes, or set MemoryMax= there for the whole service)",
    )


def check_start(rt: runtime.Runtime | None, blocked: bool) -> Finding:
    """Start a real sandbox and run `check` in it (launcher.doctor.start)."""
    if rt is None:
        return Finding("start", False, "not tried: no usable runtime", "fix the runtime first")
    from launcher.doctor import start

    leave_the_delegated_cgroup()
    result = start.start_check(rt.name)
    if result.ok and blocked:  # it started anyway: say so, but the FAILs above still hold
        result.detail += " (despite the problems above)"
    return Finding("start", result.ok, result.detail, result.fix, exit_code=result.exit_code)


def leave_the_delegated_cgroup() -> None:
    """Rootless, in a delegated cgroup itself: move into its leaf first, as every run
    does (launcher.sandbox.cgroup2), so the child's run finds the base empty and gets
    the limits the `limits` line names, not the fallback."""
    if os.geteuid() == 0:
        return
    from launcher.sandbox import cgroup2

    found = cgroup2.find()
    if found is not None:
        try:
            cgroup2.enter_leaf(found)
        except cgroup2.NotUsable:
            pass  # the child's run says why, in one line, and takes the fallback


def findings() -> list[Finding]:
    """Every check, in the order a user would fix them."""
    rt_finding, rt = check_runtime()
    found = [
        check_python(),
        check_settings(),
        check_zstd(),
        rt_finding,
        check_cgroups(),
        check_userns(),
        check_runtime_dir(),
        *check_network(),
        check_limits(rt),
        *check_cache(),
        check_state(),
    ]
    blocked = any(not f.ok and f.blocker for f in found)
    return [*found, check_start(rt, blocked)]


def run(as_json: bool = False) -> int:
    """Print the report; exit non-zero (the first blocker's code) if something blocks."""
    results = findings()
    blockers = [f for f in results if not f.ok and f.blocker]
    if as_json:
        json.dump(
            {"ok": not blockers, "items": [dataclasses.asdict(f) for f in results]},
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        for f in results:
            mark = "ok  " if f.ok else ("FAIL" if f.blocker else "warn")
            line = f"{mark} {f.name:<12} {f.detail}"
            if not f.ok and f.fix:
                line += f" -- fix: {f.fix}"
            print(line)
        print(
            "ready: a sandbox started here and passed check"
            if not blockers
            else f"{len(blockers)} problem(s) block the sandbox"
        )
    return blockers[0].exit_code if blockers else ExitCode.OK
