"""`auto-review doctor`: can this host run the sandbox? Each problem comes with its fix."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from launcher import embedded, runtime
from launcher.cache.paths import check_level
from launcher.cache.root import cache_root, default_state_dir
from launcher.errors import ExitCode, LauncherError


@dataclasses.dataclass
class Finding:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocker: bool = True
    exit_code: int = ExitCode.SANDBOX_FAILED


def check_python() -> Finding:
    v = sys.version_info
    ok = v >= (3, 10)
    return Finding(
        "python",
        ok,
        f"{v.major}.{v.minor}.{v.micro} ({sys.executable})",
        "" if ok else "run auto-review with Python 3.10 or newer",
    )


def check_zstd() -> Finding:
    if sys.version_info >= (3, 14):
        return Finding("zstd", True, "compression.zstd (standard library)")
    from importlib.machinery import EXTENSION_SUFFIXES

    suffix = EXTENSION_SUFFIXES[0]
    from launcher.cache import vendorblob

    try:
        vendored = vendorblob.has_abi(suffix)
    except OSError as exc:
        return Finding("zstd", False, f"cannot read the single file: {exc}", embedded.REBUILD)
    except LauncherError as exc:
        return Finding("zstd", False, exc.message, exc.fix or "")
    if vendored:
        return Finding("zstd", True, f"vendored zstandard for {suffix.strip('.')}")
    return Finding(
        "zstd",
        False,
        f"no vendored zstandard for {suffix}",
        "use Python 3.10-3.13 or 3.14+",
        exit_code=ExitCode.RUNTIME_MISSING,
    )


def check_runtime() -> tuple[Finding, runtime.Runtime | None]:
    try:
        rt = runtime.discover()
    except LauncherError as exc:
        return Finding("runtime", False, exc.message, exc.fix or "", exit_code=exc.exit_code), None
    try:
        out = subprocess.run([rt.path, "--version"], capture_output=True, text=True, timeout=10)
        version = (out.stdout.splitlines() or ["?"])[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding(
            "runtime",
            False,
            f"{rt.path} does not run: {exc}",
            "reinstall the runtime or set AUTO_REVIEW_RUNTIME",
        ), None
    return Finding("runtime", True, f"{version} at {rt.path} ({rt.reason})"), rt


def check_cgroups(rt: runtime.Runtime | None) -> Finding:
    mode = runtime.cgroup_mode()
    if rt is not None and rt.name == "crun" and mode != "v2":
        return Finding(
            "cgroups",
            False,
            f"{mode}; crun 1.8 refuses non-v2 hosts",
            "use runc here: AUTO_REVIEW_RUNTIME=runc",
        )
    return Finding("cgroups", True, mode)


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


def check_runtime_dir() -> Finding:
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if not xdg:
        return Finding(
            "runtime-dir", True, "XDG_RUNTIME_DIR unset: run state goes in the cache", blocker=False
        )
    ok = os.path.isdir(xdg) and os.stat(xdg).st_uid == os.geteuid()
    return Finding(
        "runtime-dir",
        ok,
        xdg,
        "" if ok else "XDG_RUNTIME_DIR is not yours: unset it",
        blocker=False,
    )


def nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_cache() -> list[Finding]:
    root = cache_root()
    out = []
    if os.path.lexists(root):
        try:
            check_level(root, "cache root", root=True)
            out.append(Finding("cache", True, root))
        except LauncherError as exc:
            out.append(Finding("cache", False, exc.message, exc.fix or "", exit_code=exc.exit_code))
    else:
        parent = nearest_existing(root)
        ok = os.access(parent, os.W_OK)
        out.append(
            Finding(
                "cache",
                ok,
                f"{root} (will be created)",
                "" if ok else f"{parent} is not writable: set AUTO_REVIEW_CACHE_DIR",
                exit_code=ExitCode.CACHE_UNUSABLE,
            )
        )
    st = os.statvfs(nearest_existing(root))
    noexec = bool(st.f_flag & os.ST_NOEXEC)
    out.append(
        Finding(
            "cache-exec",
            not noexec,
            "filesystem is noexec" if noexec else "filesystem allows exec",
            "set AUTO_REVIEW_CACHE_DIR to a filesystem mounted without noexec",
        )
    )
    free = st.f_bavail * st.f_frsize
    try:
        need = int(embedded.manifest()["unpacked_size"])
    except LauncherError:
        need = 0
    out.append(
        Finding(
            "cache-space",
            free > need,
            f"{free >> 20} MiB free, {need >> 20} MiB needed",
            "free space or set AUTO_REVIEW_CACHE_DIR",
            exit_code=ExitCode.NO_SPACE,
        )
    )
    return out


def check_network() -> list[Finding]:
    """AUTO_REVIEW_NETWORK, slirp4netns and /dev/net/tun (which it opens as the caller)."""
    from launcher import network

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
        return [Finding("network", False, exc.message, exc.fix or "", exit_code=exc.exit_code)]
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
            f"{tun} {'usable' if ok else 'not usable by this user'}",
            f"as root: chmod 0666 {tun} (the distributions' default)",
        )
    )
    return found


def check_limits() -> Finding:
    """What caps the sandbox's processes and memory in this mode."""
    from launcher import ocispec

    if os.geteuid() == 0:
        if not ocispec.memory_controller():
            return Finding(
                "limits",
                False,
                f"cgroup pids {ocispec.PIDS_LIMIT}; memory limit off: no memory cgroup controller",
                "enable the memory controller (cgroup_enable=memory on the kernel command line)",
                blocker=False,
            )
        return Finding(
            "limits",
            True,
            f"cgroup pids {ocispec.PIDS_LIMIT}, memory {ocispec.MEMORY_LIMIT >> 20} MiB",
        )
    return Finding(
        "limits",
        False,
        f"rootless: pids capped by RLIMIT_NPROC {ocispec.PIDS_LIMIT} (per user namespace);"
        " memory limit off: rootless runs get no cgroup",
        "run as root for a memory limit, or cap the service's memory in its systemd unit"
        " (MemoryMax=)",
        blocker=False,
    )


def check_state() -> Finding:
    path = os.environ.get("AUTO_REVIEW_STATE_DIR") or default_state_dir()
    target = path if os.path.exists(path) else nearest_existing(path)
    ok = os.access(target, os.W_OK)
    return Finding(
        "state",
        ok,
        path,
        "" if ok else "set AUTO_REVIEW_STATE_DIR to a writable dir",
        exit_code=ExitCode.CACHE_UNUSABLE,
    )


def findings() -> list[Finding]:
    """Every check, in the order a user would fix them."""
    rt_finding, rt = check_runtime()
    return [
        check_python(),
        check_zstd(),
        rt_finding,
        check_cgroups(rt),
        check_userns(),
        check_runtime_dir(),
        *check_network(),
        check_limits(),
        *check_cache(),
        check_state(),
    ]


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
            "ready: this host can run the sandbox"
            if not blockers
            else f"{len(blockers)} problem(s) block the sandbox"
        )
    return blockers[0].exit_code if blockers else ExitCode.OK
